"""Values several layers name: the accelerators and the confidential guests cocolab knows."""

ACCELS = ("auto", "kvm", "tcg")
"""--accel and a lane's `accel`: `auto` proves KVM with a real boot, else TCG."""

CC_KINDS = ("", "tdx", "snp")
"""A lane's or machine's `cc`: '' for a plain guest; the confidential guests cocolab can boot."""
