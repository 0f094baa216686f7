"""Every suite's conftest.py lives under this one: pytest puts this directory on sys.path
(rootdir-less "prepend" imports), so the helpers beside it (fake_kernel.py) import by name
from tests/unit, tests/rig and tests/smoke alike."""
