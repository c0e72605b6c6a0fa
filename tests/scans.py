"""Scanned-invoice fixtures: real pixels made at test time with Pillow, no binary files.

``make_scan`` renders text lines as a simple A4 invoice page (a TrueType font when one is
installed, DejaVu on Debian), optionally rotated, noisy and JPEG-compressed like a phone
photo or a cheap scanner, and returns PNG or JPEG bytes. ``make_image_pdf`` wraps such pages
into an image-only PDF (no text layer: what a scanner's "scan to PDF" produces).

Layout of a line: ``"left\\tright"`` puts ``right`` against the right margin (amount
columns); the first line is drawn larger (the title). Everything is deterministic for a
given ``seed``, so recognition-accuracy sets built on these are reproducible.

``SAMPLE_INVOICE`` is a French invoice with accents, an invoice number, dates, amounts and
an IBAN; ``SAMPLE_NUMBER`` is its number. Accuracy sets can reuse both.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

SAMPLE_NUMBER = "FA-2024-0042"
SAMPLE_INVOICE: list[str] = [
    "FACTURE",
    "Atelier Dupont SARL",
    "12 rue des Lilas, 69003 Lyon",
    "SIRET 303 265 045 00012 - TVA FR40303265045",
    "",
    f"Facture n° {SAMPLE_NUMBER}",
    "Date de facture : 12/03/2024",
    "Date d'échéance : 11/04/2024",
    "Client : Société Générale de Négoce",
    "",
    "Désignation\tMontant HT",
    "Prestation de maintenance préventive\t1 000,00 EUR",
    "Déplacement et matériel\t250,00 EUR",
    "Total HT\t1 250,00 EUR",
    "TVA 20 %\t250,00 EUR",
    "Total TTC\t1 500,00 EUR",
    "",
    "Règlement par virement à réception",
    "IBAN FR76 3000 6000 0112 3456 7890 189",
]

A4_INCHES = (8.27, 11.69)
_FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/truetype/liberation",
              "/usr/share/fonts/truetype/freefont", "/usr/share/fonts")
_FONT_NAMES = ("DejaVuSans.ttf", "LiberationSans-Regular.ttf", "FreeSans.ttf")


def font_path() -> Path | None:
    """A TrueType font with French accents, or None (then PIL's default font is used)."""
    for d in _FONT_DIRS:
        for name in _FONT_NAMES:
            p = Path(d) / name
            if p.is_file():
                return p
    found = sorted(Path("/usr/share/fonts").rglob("*.ttf")) if Path("/usr/share/fonts").is_dir() \
        else []
    return found[0] if found else None


def _font(px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    path = font_path()
    if path is not None:
        return ImageFont.truetype(str(path), px)
    return ImageFont.load_default(size=px)  # Pillow >= 10.1 scales its built-in font


def render_page(lines: list[str], *, dpi: int = 300, rotate: float = 0.0, noise: float = 0.0,
                seed: int = 0) -> Image.Image:
    """The page as a greyscale ("L") Pillow image at ``dpi``."""
    w, h = round(A4_INCHES[0] * dpi), round(A4_INCHES[1] * dpi)
    paper = 255 if noise <= 0 else 242
    im = Image.new("L", (w, h), paper)
    draw = ImageDraw.Draw(im)
    body_px = round(11 / 72 * dpi)  # 11 pt
    margin = dpi  # 1 inch
    y = margin
    for i, line in enumerate(lines):
        font = _font(round(body_px * 1.8) if i == 0 else body_px)
        left, _, right = line.partition("\t")
        if left:
            draw.text((margin, y), left, fill=0, font=font)
        if right:
            width = draw.textlength(right, font=font)
            draw.text((w - margin - width, y), right, fill=0, font=font)
        y += round((body_px * 1.8 if i == 0 else body_px) * 1.7)
    if noise > 0:
        im = im.filter(ImageFilter.GaussianBlur(radius=dpi / 400))
        rng = random.Random(seed)
        sw, sh = max(1, w // 2), max(1, h // 2)
        grain = Image.frombytes("L", (sw, sh), rng.randbytes(sw * sh))
        amplitude = min(1.0, noise)
        grain = grain.point(lambda v: round(128 + (v - 128) * amplitude))
        grain = grain.resize((w, h), Image.Resampling.NEAREST)
        im = ImageChops.add(im, grain, scale=1.0, offset=-128)
        # a few dark specks, like dust on the scanner glass
        draw = ImageDraw.Draw(im)
        for _ in range(int(200 * amplitude)):
            x, yy, r = rng.randrange(w), rng.randrange(h), rng.randint(1, max(1, dpi // 150))
            draw.ellipse((x - r, yy - r, x + r, yy + r), fill=rng.randint(0, 90))
    if rotate:
        im = im.rotate(rotate, resample=Image.Resampling.BICUBIC, expand=False, fillcolor=paper)
    return im


def make_scan(lines: list[str], *, dpi: int = 300, rotate: float = 0.0, noise: float = 0.0,
              jpeg_quality: int | None = None, seed: int = 0) -> bytes:
    """PNG bytes (or JPEG bytes when ``jpeg_quality`` is given) of one scanned page.

    ``rotate``: degrees counter-clockwise (a crooked sheet); ``noise``: 0..1, paper grain,
    slight blur and specks; ``seed`` makes the noise reproducible.
    """
    im = render_page(lines, dpi=dpi, rotate=rotate, noise=noise, seed=seed)
    out = io.BytesIO()
    if jpeg_quality is None:
        im.save(out, "PNG", dpi=(dpi, dpi))
    else:
        im.convert("RGB").save(out, "JPEG", quality=jpeg_quality, dpi=(dpi, dpi))
    return out.getvalue()


def make_image_pdf(*pages: list[str], dpi: int = 300, rotate: float = 0.0, noise: float = 0.0,
                   jpeg_quality: int = 90, seed: int = 0) -> bytes:
    """An image-only PDF, one scanned page per argument (no text layer at all)."""
    if not pages:
        raise ValueError("make_image_pdf needs at least one page of lines")
    images = [render_page(lines, dpi=dpi, rotate=rotate, noise=noise, seed=seed + n)
              for n, lines in enumerate(pages)]
    out = io.BytesIO()
    images[0].save(out, "PDF", resolution=float(dpi), save_all=True,
                   append_images=images[1:], quality=jpeg_quality)
    return out.getvalue()
