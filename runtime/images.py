"""Raw images to what a shipped image model reads: the MNIST datamodule's normalized pixels, from an IDX
file, image files or a folder of them. numpy only (PIL for image files, imported when one is read).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_UINT8 = 0x08  # IDX type byte of unsigned bytes: the third byte of the magic number


class ImageFeaturizer:
    """Raw uint8 images to the MNIST datamodule's features: ``(pixels / scale - mean) / std``, flattened.

    The 256 possible pixel values are computed once, in float32 and in the datamodule's order of
    operations, so a lookup gives exactly its features.

    Args:
        image_shape: ``(height, width)`` of every image.
        mean: Mean subtracted after scaling.
        std: Standard deviation divided by after subtracting the mean.
        scale: Pixels are divided by it first (255: to [0, 1]).

    Example:
        >>> featurize = ImageFeaturizer((1, 2), mean=0.5, std=0.5)
        >>> featurize(np.array([[[0, 255]]], dtype=np.uint8)).tolist()
        [[-1.0, 1.0]]
    """

    def __init__(self, image_shape: tuple[int, int], mean: float, std: float, scale: float = 255.0) -> None:
        if len(image_shape) != 2 or min(image_shape) < 1:
            raise ValueError(f"Expected `image_shape` (height, width) >= 1, got {image_shape}.")
        if not std > 0 or not scale > 0:
            raise ValueError(f"Expected `std` and `scale` > 0, got {std} and {scale}.")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.input_dim = math.prod(self.image_shape)
        pixels = np.arange(256, dtype=np.float32)
        self.table = (pixels / np.float32(scale) - np.float32(mean)) / np.float32(std)  # (256,) float32

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(B, height, width)`` uint8 images to ``(B, height * width)`` float32 features."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"Expected raw uint8 images of shape (B, {self.image_shape[0]}, {self.image_shape[1]}), got "
                f"{images.dtype} {images.shape}. Pass unnormalized pixels, a batch even for one image."
            )
        return self.table[images.reshape(len(images), -1)]  # (B, H, W) -> (B, H * W)


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """The ``(N, height, width)`` uint8 images of an uncompressed IDX file (MNIST's ``*-images-idx3-ubyte``).

    Raises:
        ValueError: The file is not a 3-dimensional uint8 IDX file, or is truncated or padded.
    """
    path = Path(path)
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != (_IDX_UINT8 << 8 | 3):
        found = "a gzip archive (gunzip it)" if data[:2] == b"\x1f\x8b" else f"magic number {magic}"
        raise ValueError(
            f"{path} is not an IDX image file: {found}, expected 2051 (uint8 images, 3 dimensions). "
            "Pass an uncompressed *-images-idx3-ubyte file."
        )
    n, height, width = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    if len(data) != 16 + n * height * width:
        raise ValueError(
            f"{path} is truncated or padded: {len(data)} bytes, expected {16 + n * height * width} for {n} images "
            f"of {height}x{width}. Write it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, height, width)


def read_image_files(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Image files (PNG, JPEG, ...) as ``(N, height, width)`` uint8 grayscale; all must share one size."""
    from PIL import Image  # torchvision's dependency; only image files need it

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("L"), dtype=np.uint8))  # (H, W)
        if images[-1].shape != images[0].shape:
            raise ValueError(
                f"{path} is {images[-1].shape[1]}x{images[-1].shape[0]} pixels, {paths[0]} is "
                f"{images[0].shape[1]}x{images[0].shape[0]}: resize them to the model's image size first."
            )
    return np.stack(images)


def read_images(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """Raw images and their names from an IDX file, one image file, or a folder of image files (by name).

    Returns:
        ``(N, height, width)`` uint8 images, and the file name of each (``None`` for an IDX file: its rows).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no image file ({', '.join(IMAGE_SUFFIXES)}).")
        return read_image_files(files), [p.name for p in files]
    if not path.is_file():
        raise ValueError(f"{path} not found: pass an IDX image file, an image file or a folder of them.")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_files([path]), [path.name]
    return read_idx_images(path), None
