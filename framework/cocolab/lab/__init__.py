"""cocolab as a KernelCI pull lab (`cocolab lab`): job definitions and results as nodes
(`job.py`), the polling agent (`agent.py`)."""
