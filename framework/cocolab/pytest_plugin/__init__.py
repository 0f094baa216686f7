"""The pytest plugin: options, markers, the vm fixture, reports and failure bundles."""
