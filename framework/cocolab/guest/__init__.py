"""The in-guest API: things tests ask a booted guest, on top of vm.run()."""
