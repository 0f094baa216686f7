"""The default guest: an initramfs built from guests/ and Debian packages, cached by content."""

from cocolab.guest_image.build import GuestImage, build_guest_image, build_proof_initrd

__all__ = ["GuestImage", "build_guest_image", "build_proof_initrd"]
