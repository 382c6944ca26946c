"""Drawing one image of the embedded dataset: bodies, discriminative parts, clutter and masks.

Why it is hard in the way RRM cares about: every object is a *body* whose shape and colour come from
one palette shared by all 20 classes, carrying a *discriminative part* (a saturated hue and a shape
that name the class) that covers 18-32% of the body (30% on average, so
"label only the parts" scores ~0.32 mIoU against the full masks). An image-level classifier needs only
the part, so an ideal CAM (paper eq. 1-2) covers the part and little of the body. Bodies are flat-coloured
with mild texture and contrast with their surroundings, so colour affinity -- the dense CRF of the
reliable-region step (eq. 4-7) and the dense energy loss (eq. 9-11) -- can spread a label over a whole
body and cut a CAM's spill at its edge. A flat body is one clique for the bilateral kernel (srgb 13):
the CRF relabels it as a whole, by the majority of its soft labels, so it recovers a body where the
CAM already covers about half of it and shrinks the label back to the part where it covers less.
Backgrounds are smooth random gradients with texture, distractor strokes and shapes, and part-less
"decoy" bodies, all in muted colours no part uses, so neither "a blob is present" nor "a colour is
present" alone names a class.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from rrm.data.classes import IGNORE_INDEX

# Class c (1..20) wears part shape PART_SHAPES[(c-1) % 4] in colour PART_COLOURS[c-1]: twenty saturated
# hues 18 degrees apart, so neighbouring hues also differ in shape; a classifier trained from scratch
# learns a hue per class in a few hundred steps.
PART_SHAPES: tuple[str, ...] = ("disc", "square", "triangle", "cross")
PART_FRACTION = (0.18, 0.32)  # part area / body area, before the minimum part size is enforced
GLOBAL_QUANTILE = 0.03  # body colours keep >= _MIN_CONTRAST from 97% of the pixels around them
PART_SPREAD = 0.3  # sd of the part centre around the body centroid, in body radii
OBJECT_FRACTION = (0.08, 0.30)  # body area / image area
_MIN_PART_DIST = 110.0  # muted colours keep this RGB distance from every part colour
_MIN_CONTRAST = 45.0  # RGB distance a body keeps from 90% of its outline ring and 97% of the image
_REFERENCE_SIZE = 96  # pixel constants below are for 96 x 96 images and scale with image_size


def _scale(image_size: int) -> float:
    return image_size / _REFERENCE_SIZE


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """(N, 3) HSV in [0, 1] -> (N, 3) RGB in [0, 255] (float); the standard hexcone formula."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return (v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)) * 255.0


PART_COLOURS = _hsv_to_rgb(np.stack([np.arange(20) / 20, np.full(20, 0.9), np.full(20, 0.95)], 1))


# Bodies of class c lean towards hue BODY_HUES[c-1] (+-0.05): a weak, class-correlated appearance cue, as
# a cat's fur is on VOC (desaturated, shared with backgrounds and decoys, so it names no class alone).
# Without it even full supervision had to infer a body's class from its part alone and did not learn in
# a CPU schedule. The permutation keeps a body's hue away from its own part's hue.
BODY_HUES = ((np.arange(20) * 7) % 20) / 20 + 0.025


def _muted_colours(rng: np.random.Generator, n: int, hue: float | None = None) -> np.ndarray:
    """(n, 3) float RGB colours of low-to-mid saturation, far from every part colour.

    Backgrounds and distractors draw any hue; bodies draw near their class's hue (`hue`). Only the
    saturated part colours (excluded here) identify a class on their own.
    """
    out = np.empty((0, 3))
    while len(out) < n:
        hues = rng.random(4 * n) if hue is None else (hue + rng.uniform(-0.05, 0.05, 4 * n)) % 1.0
        hsv = np.stack([hues, rng.uniform(0.0, 0.5, 4 * n), rng.uniform(0.15, 0.92, 4 * n)], 1)
        rgb = _hsv_to_rgb(hsv)
        far = np.linalg.norm(rgb[:, None] - PART_COLOURS[None], axis=2).min(1) >= _MIN_PART_DIST
        out = np.concatenate([out, rgb[far]])
    return out[:n]


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size, 3) random field in [-1, 1]: a cells x cells RGB grid upsampled bicubically."""
    grid = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
    up = Image.fromarray(grid, "RGB").resize((size, size), Image.BICUBIC)
    return (np.asarray(up, dtype=np.float64) - 127.5) / 127.5


def _window_reduce(array: np.ndarray, radius: int, reduce: np.ufunc, pad_value: int | bool) -> np.ndarray:
    """Separable square max/min filter of half-width `radius` over a (H, W) array (whole-array ops)."""
    h, w = array.shape
    padded = np.pad(array, ((radius, radius), (0, 0)), constant_values=pad_value)
    out = padded[:h]
    for shift in range(1, 2 * radius + 1):
        out = reduce(out, padded[shift : shift + h])
    padded = np.pad(out, ((0, 0), (radius, radius)), constant_values=pad_value)
    out = padded[:, :w]
    for shift in range(1, 2 * radius + 1):
        out = reduce(out, padded[:, shift : shift + w])
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    return _window_reduce(mask, radius, np.maximum, False)


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Square erosion; outside the image counts as outside the mask, so eroded points keep clear of edges."""
    return _window_reduce(mask, radius, np.minimum, False)


def void_border(instances: np.ndarray, radius: int) -> np.ndarray:
    """(H, W) bool band where the instance map changes within `radius` px (VOC's void outline).

    Every object boundary -- against background or against another object -- gets a band about
    2 * radius px wide, straddling the edge. The image frame is not a boundary.
    """
    padded = np.pad(instances, radius, mode="edge")  # so the frame itself is no edge
    hi = _window_reduce(padded, radius, np.maximum, 0)[radius:-radius, radius:-radius]
    lo = _window_reduce(padded, radius, np.minimum, 255)[radius:-radius, radius:-radius]
    return hi != lo


def _rasterise(polygon: np.ndarray, size: int) -> np.ndarray:
    """(N, 2) xy vertices -> (size, size) bool mask."""
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _body_polygon(rng: np.random.Generator, area: float) -> np.ndarray:
    """Vertices (centred at 0) of a random ellipse, smooth blob or polygon with the given area."""
    kind = rng.integers(3)
    if kind == 0:  # ellipse
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        aspect = rng.uniform(0.45, 1.0)
        pts = np.stack([np.cos(t) / np.sqrt(aspect), np.sin(t) * np.sqrt(aspect)], 1)
    elif kind == 1:  # smooth blob: radius with a few low harmonics
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        k = np.arange(2, 5)[:, None]
        radius = 1 + (rng.uniform(0, 0.2, (3, 1)) * np.cos(k * t + rng.uniform(0, 2 * np.pi, (3, 1)))).sum(0)
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius[:, None]
    else:  # star-shaped polygon
        n = rng.integers(5, 9)
        t = np.sort(rng.uniform(0, 2 * np.pi, n))
        pts = np.stack([np.cos(t), np.sin(t)], 1) * rng.uniform(0.75, 1.25, (n, 1))
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T
    return pts * np.sqrt(area / _polygon_area(pts))


def _part_offsets(shape: str, area: float, angle: float) -> np.ndarray:
    """(N, 2) integer (dy, dx) pixel offsets, around 0, of a class part with about the given area."""
    if shape == "disc":
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    elif shape == "square":
        pts = np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64)
    elif shape == "triangle":
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        pts = np.stack([np.cos(t), np.sin(t)], 1)
    else:  # cross: arms one third of the span wide
        a, b = 1.0, 1.0 / 3.0
        pts = np.array(
            [
                (-b, -a),
                (b, -a),
                (b, -b),
                (a, -b),
                (a, b),
                (b, b),
                (b, a),
                (-b, a),
                (-b, b),
                (-a, b),
                (-a, -b),
                (-b, -b),
            ],
            dtype=np.float64,
        )
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = (pts @ rot.T) * np.sqrt(area / _polygon_area(pts))
    half = int(np.ceil(np.abs(pts).max())) + 1
    drawn = _rasterise(pts + half, 2 * half + 1)
    return np.argwhere(drawn) - half


def _outline(offsets: np.ndarray) -> np.ndarray:
    """Bool per offset: True where a 4-neighbour is outside the shape (its outline pixels)."""
    half = int(np.abs(offsets).max()) + 1
    grid = np.zeros((2 * half + 1,) * 2, bool)
    grid[offsets[:, 0] + half, offsets[:, 1] + half] = True
    interior = grid[1:-1, 1:-1] & grid[:-2, 1:-1] & grid[2:, 1:-1] & grid[1:-1, :-2] & grid[1:-1, 2:]
    return ~interior[offsets[:, 0] + half - 1, offsets[:, 1] + half - 1]


def _fits(core: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(H, W) bool: centres c with core[c + o] True for every offset o (outside the image is False).

    Testing the outline offsets suffices for hole-free cores; the caller re-checks the full part.
    """
    pad = int(np.abs(offsets).max())
    padded = np.pad(core, pad, constant_values=False)
    h, w = core.shape
    fits = core.copy()
    for dy, dx in offsets.tolist():
        fits &= padded[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
    return fits


def _draw_clutter(rng: np.random.Generator, canvas: np.ndarray, s: float) -> np.ndarray:
    """Distractor strokes and small shapes, plus 0-1 part-less decoy body, in muted colours."""
    size = canvas.shape[0]
    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    n = int(rng.integers(4, 10))
    colours = _muted_colours(rng, n + 1).astype(int)
    for i in range(n):
        colour = tuple(colours[i])
        kind = rng.integers(4)
        x0, y0 = rng.uniform(-0.1, 1.1, 2) * size
        extent = rng.uniform(6, 26) * s
        if kind == 0:  # stroke
            angle = rng.uniform(0, 2 * np.pi)
            x1, y1 = x0 + 2 * extent * np.cos(angle), y0 + 2 * extent * np.sin(angle)
            draw.line([(x0, y0), (x1, y1)], fill=colour, width=max(1, int(round(rng.uniform(1, 3.5) * s))))
        elif kind == 1:  # arc
            box = [x0 - extent, y0 - extent, x0 + extent, y0 + extent]
            start = rng.uniform(0, 360)
            draw.arc(
                box,
                start,
                start + rng.uniform(60, 270),
                fill=colour,
                width=max(1, int(round(rng.uniform(1, 3) * s))),
            )
        elif kind == 2:  # small filled ellipse or rectangle (shapes like parts, colours unlike them)
            box = [x0, y0, x0 + extent * rng.uniform(0.4, 1), y0 + extent * rng.uniform(0.4, 1)]
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
        else:  # small polygon
            pts = _body_polygon(rng, (extent * 0.6) ** 2) + (x0, y0)
            draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
    out = np.asarray(img, dtype=np.float64).copy()
    if rng.random() < 0.5:  # a decoy: looks like a body, has no part, so it is background
        area = rng.uniform(0.03, 0.08) * size * size
        pts = _body_polygon(rng, area) + rng.uniform(0.15, 0.85, 2) * size
        out[_rasterise(pts, size)] = colours[n]
    return out


def _pick_body_colour(
    rng: np.random.Generator, canvas: np.ndarray, mask: np.ndarray, ring: np.ndarray, hue: float | None = None
) -> tuple[np.ndarray, float]:
    """The muted colour (of 32 candidates) that best contrasts with the rest of the image.

    Score: the smaller of the 10th-percentile RGB distance to the ring just outside `mask` (so the body
    has visible edges) and the 3rd-percentile distance to every pixel outside it (so few background
    pixels share its colour: the CRF's bilateral kernel spans the whole 96 px image, and background
    pixels of the body's colour would vote the body back to background).
    """
    # 32 candidates near the class hue first, 32 of any hue as the fallback when none of those contrasts
    candidates = np.concatenate([_muted_colours(rng, 32, hue), _muted_colours(rng, 32)])
    around, outside = canvas[ring], canvas[~mask][::11]  # a subsample is plenty for a percentile
    if len(around) == 0:
        return candidates[0], np.inf  # nothing around it to contrast with

    def distance_quantile(pixels: np.ndarray, q: float) -> np.ndarray:
        squared = ((pixels[:, None, :] - candidates[None]) ** 2).sum(-1)  # (n_pixels, 32)
        k = int(q * (len(pixels) - 1))
        return np.sqrt(np.partition(squared, k, axis=0)[k])

    score = np.minimum(distance_quantile(around, 0.1), distance_quantile(outside, GLOBAL_QUANTILE))
    best = int(np.argmax(score[:32]))
    if score[best] < _MIN_CONTRAST:
        best = int(np.argmax(score))
    return candidates[best], float(score[best])


def render_image(rng: np.random.Generator, classes: list[int], image_size: int) -> dict[str, np.ndarray]:
    """Draw one image with one object per entry of `classes` (later objects may occlude earlier bodies).

    Returns ``image`` (H, W, 3) uint8, ``label`` (H, W) uint8 class map with 255 borders, ``instance``
    (H, W) uint8 instance map (1..k in drawing order, 255 borders) and ``part`` (H, W) uint8 holding the
    instance index of the object whose part covers each pixel (0 elsewhere). Parts are never occluded
    and never touch a border, so each listed class stays recognisable.
    """
    size, s = image_size, _scale(image_size)
    border = max(1, int(round(s)))
    cells = int(rng.integers(2, 5))  # a smooth gradient through cells x cells random muted colours
    grid = _muted_colours(rng, cells * cells).reshape(cells, cells, 3)
    img = Image.fromarray(grid.astype(np.uint8), "RGB").resize((size, size), Image.BICUBIC)
    canvas = np.asarray(img, dtype=np.float64).copy()
    canvas += 14.0 * _smooth_field(rng, size, max(4, size // 8))  # background texture
    canvas = _draw_clutter(rng, canvas, s)

    instance = np.zeros((size, size), np.uint8)
    part = np.zeros((size, size), np.uint8)
    protected = np.zeros((size, size), bool)  # earlier parts plus a margin: no later body may cover them
    areas: list[int] = []
    labels: list[int] = []
    for cls in classes:
        placed = False
        for attempt in range(60):
            shrink = 0.985**attempt
            area = rng.uniform(*OBJECT_FRACTION) * size * size * shrink
            pts = _body_polygon(rng, area)
            radius = np.sqrt(area / np.pi)  # the body may leave the frame by up to 0.4 radius
            mask = _rasterise(pts + rng.uniform(0.6 * radius, size - 0.6 * radius, 2), size)
            if mask.sum() < 0.5 * OBJECT_FRACTION[0] * size * size * shrink or (mask & protected).any():
                continue
            # earlier objects must keep at least half their area visible
            if any(((instance == k + 1) & ~mask).sum() < 0.5 * areas[k] for k in range(len(areas))):
                continue
            ring = _dilate(mask, border + 1) & ~mask
            colour, contrast = _pick_body_colour(rng, canvas, mask, ring, BODY_HUES[cls - 1])
            if contrast < _MIN_CONTRAST:
                continue
            body_area = int(mask.sum())
            shape = PART_SHAPES[(cls - 1) % len(PART_SHAPES)]
            min_area = (8.0 * s) ** 2  # parts stay >= ~8x8 px at 96 px so a stride-8 network sees them
            part_area = max(rng.uniform(*PART_FRACTION) * body_area, min_area)
            offsets = _part_offsets(shape, part_area, rng.uniform(-0.26, 0.26))
            core = _erode(mask, border)  # the part keeps clear of the void border
            centres = np.argwhere(_fits(core, offsets[_outline(offsets)]))
            if len(centres) == 0:
                continue
            # centre-biased: the part sits nearest a random point around the body's centroid. A CAM's halo
            # around a central part reaches more of the body; the CRF relabels a flat body as a whole
            # (one colour clique), so this coverage decides whether it recovers the body.
            target = np.argwhere(mask).mean(0) + rng.normal(0.0, PART_SPREAD * np.sqrt(body_area / np.pi), 2)
            cy, cx = centres[int(np.argmin(((centres - target) ** 2).sum(1)))]
            part_mask = np.zeros_like(mask)
            part_mask[offsets[:, 0] + cy, offsets[:, 1] + cx] = True
            if (part_mask & ~core).any():  # the outline test missed a hole in the core: try again
                continue
            instance[mask] = len(areas) + 1
            areas.append(body_area)
            labels.append(cls)
            texture = 7.0 * _smooth_field(rng, size, max(3, size // 16))[mask]
            canvas[mask] = colour + texture
            jitter = rng.uniform(-8, 8, 3)
            canvas[part_mask] = PART_COLOURS[cls - 1] + jitter
            part[part_mask] = len(areas)
            protected |= _dilate(part_mask, 2 * border + 1)
            placed = True
            break
        if not placed and not labels:
            raise RuntimeError(f"could not place a first object of class {cls} at image_size {size}")

    void = void_border(instance, border)
    lut = np.array([0] + labels + [0] * (256 - len(labels) - 1), np.uint8)
    label = lut[instance]
    label[void] = IGNORE_INDEX
    instance_out = instance.copy()
    instance_out[void] = IGNORE_INDEX
    part[void] = 0  # by construction parts keep clear of borders; this only guards rounding
    canvas += rng.normal(0.0, 3.0, canvas.shape)  # sensor noise, mild against the CRF's srgb=13
    image = np.clip(np.round(canvas), 0, 255).astype(np.uint8)
    return {"image": image, "label": label, "instance": instance_out, "part": part}
