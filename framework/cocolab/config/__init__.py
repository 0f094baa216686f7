"""Configuration: lanes from qemu-configs/, options, and their precedence."""

from cocolab.config.lane import Lane, lane_names, load_lane

__all__ = ["Lane", "lane_names", "load_lane"]
