"""cocolab's suites as avocado jobs: `avocado run tests/devmem/` (extra `cocolab[avocado]`).

pytest stays the only way tests are written. The resolver (`resolver.py`) collects a reference
with pytest and gives avocado one runnable of kind `cocolab-pytest` per test item, its markers
as tags. The runner (`runner.py`, also the `avocado-runner-cocolab-pytest` command) runs that
one item in a pytest process of its own and turns pytest's reports into avocado's status
(`verdict.py`). `bridge.py` is the pytest plugin both load (`-p cocolab.avocado.bridge`) to
hand them what pytest knows, as JSON; it never imports avocado.
"""
