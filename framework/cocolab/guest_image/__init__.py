"""The default guest: an initramfs built from guests/ and Debian packages, cached by content."""

from cocolab.guest_image.build import GuestImage, GuestKeys, build_guest_image, build_proof_initrd

__all__ = ["GuestImage", "GuestKeys", "build_guest_image", "build_proof_initrd"]
