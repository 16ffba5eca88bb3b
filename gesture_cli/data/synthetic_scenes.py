"""`synthetic-scenes`: seeded street scenes with a label for every pixel, the embedded default of
`gx segment-train` (no download, any machine).

Each image is drawn with OpenCV from a generator seeded by (seed, split, index): a sky gradient above a
random horizon, a row of buildings with windows, a road in perspective with lane marks between two
sidewalks, grass at the sides, trees (trunk + canopy), cars on the road (body, cabin, wheels) and
person-like figures (head, torso, legs) on the sidewalks; then colour jitter per region and pixel
noise. The label mask is drawn with the same shapes, so it is exact. Class frequencies are uneven on
purpose (sky, road and building large; persons small), as in real street scenes.

Options: size=H (images are H x 4H/3), train_images=, val_images=, test_images=. The dataset itself
(`make_synthetic_scenes`) is built in data/segmentation.py: this module only draws arrays, so it needs
nothing of the registry that loads it.
"""

from __future__ import annotations

import numpy as np

SCENE_CLASSES = ("sky", "building", "road", "sidewalk", "grass", "tree", "person", "car")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
GENERATOR_VERSION = 1  # bump when the drawing changes, so caches keyed on it are refreshed

SKY, BUILDING, ROAD, SIDEWALK, GRASS, TREE, PERSON, CAR = range(len(SCENE_CLASSES))


def _jitter(rng: np.random.Generator, rgb, amount: float = 18.0) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.normal(0, amount), 0, 255)) for c in rgb)


def _poly(img, mask, pts, colour, label) -> None:
    import cv2

    pts = np.asarray(pts, dtype=np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [pts], colour)
    cv2.fillPoly(mask, [pts], int(label))


def _rect(img, mask, x0, y0, x1, y1, colour, label) -> None:
    _poly(img, mask, [(x0, y0), (x1, y0), (x1, y1), (x0, y1)], colour, label)


def _ellipse(img, mask, centre, axes, colour, label) -> None:
    import cv2

    c = (int(centre[0]), int(centre[1]))
    a = (max(1, int(axes[0])), max(1, int(axes[1])))
    cv2.ellipse(img, c, a, 0, 0, 360, colour, -1)
    cv2.ellipse(mask, c, a, 0, 0, 360, int(label), -1)


def render_scene(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(image uint8 [H, W, 3] RGB, mask uint8 [H, W] of SCENE_CLASSES ids) for one scene."""
    import cv2

    h, w = height, width
    img = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    horizon = int(h * rng.uniform(0.35, 0.5))

    # sky: vertical gradient from deep to pale blue (or grey on an overcast day)
    top = np.array(_jitter(rng, (60, 120, 200) if rng.random() < 0.75 else (150, 155, 165), 15), np.float32)
    bottom = np.array(_jitter(rng, (170, 205, 235), 12), np.float32)
    t = np.linspace(0, 1, horizon, dtype=np.float32)[:, None, None]
    img[:horizon] = (top * (1 - t) + bottom * t).astype(np.uint8)

    # ground: grass everywhere below the horizon, then sidewalks and the road in perspective
    _rect(img, mask, 0, horizon, w, h, _jitter(rng, (80, 150, 60)), GRASS)
    vx = w * rng.uniform(0.35, 0.65)  # vanishing point on the horizon
    road_l, road_r = w * rng.uniform(-0.1, 0.25), w * rng.uniform(0.75, 1.1)
    walk = w * rng.uniform(0.08, 0.18)
    _poly(img, mask, [(vx - 3, horizon), (vx + 3, horizon), (road_r + walk, h), (road_l - walk, h)], _jitter(rng, (190, 180, 165)), SIDEWALK)
    _poly(img, mask, [(vx - 1, horizon), (vx + 1, horizon), (road_r, h), (road_l, h)], _jitter(rng, (95, 95, 100), 10), ROAD)
    for k in range(6):  # dashed centre line: painted road is still road
        f0, f1 = (k + 0.2) / 6, (k + 0.55) / 6
        y0, y1 = horizon + (h - horizon) * f0 ** 1.5, horizon + (h - horizon) * f1 ** 1.5
        cx0 = vx + ((road_l + road_r) / 2 - vx) * (y0 - horizon) / (h - horizon)
        cx1 = vx + ((road_l + road_r) / 2 - vx) * (y1 - horizon) / (h - horizon)
        half0, half1 = 0.5 + 2.5 * f0, 0.5 + 2.5 * f1
        _poly(img, mask, [(cx0 - half0, y0), (cx0 + half0, y0), (cx1 + half1, y1), (cx1 - half1, y1)], (235, 235, 225), ROAD)

    # buildings: a skyline of boxes standing on the horizon, with rows of windows
    x = -rng.uniform(0, w * 0.1)
    while x < w:
        bw = w * rng.uniform(0.1, 0.28)
        bh = horizon * rng.uniform(0.35, 0.95)
        if rng.random() < 0.85:
            colour = _jitter(rng, [(150, 110, 90), (190, 170, 140), (120, 120, 125), (170, 90, 70)][rng.integers(4)], 15)
            x0, y0, x1 = int(x), int(horizon - bh), int(x + bw)
            _rect(img, mask, x0, y0, x1, horizon, colour, BUILDING)
            win = tuple(int(c * 0.45) for c in colour)
            step = max(4, int(bw / 4))
            for wy in range(y0 + step // 2, horizon - step // 2, step):
                for wx in range(x0 + step // 3, x1 - step // 2, step):
                    _rect(img, mask, wx, wy, wx + max(1, step // 2), wy + max(1, step // 2), win, BUILDING)
        x += bw + w * rng.uniform(0, 0.08)

    # trees at the sides of the road: trunk, then a canopy of overlapping ellipses
    for _ in range(rng.integers(1, 4)):
        side = rng.choice([-1, 1])
        tx = (road_l - walk - w * rng.uniform(0.02, 0.15)) if side < 0 else (road_r + walk + w * rng.uniform(0.02, 0.15))
        tx = float(np.clip(tx, w * 0.02, w * 0.98))
        base = horizon + (h - horizon) * rng.uniform(0.05, 0.5)
        th = (base - horizon + h * 0.1) * rng.uniform(0.8, 1.4)
        _rect(img, mask, tx - th * 0.05, base - th * 0.55, tx + th * 0.05, base, _jitter(rng, (95, 65, 40)), TREE)
        green = _jitter(rng, (40, 110, 40), 20)
        for _ in range(4):
            _ellipse(img, mask, (tx + rng.normal(0, th * 0.12), base - th * (0.6 + rng.uniform(0, 0.25))),
                     (th * rng.uniform(0.15, 0.28), th * rng.uniform(0.15, 0.25)), _jitter(rng, green, 10), TREE)

    # cars on the road, larger when nearer (lower in the image)
    for _ in range(rng.integers(0, 4)):
        f = rng.uniform(0.15, 0.95)
        cy = horizon + (h - horizon) * f
        lo = vx + (road_l - vx) * f
        hi = vx + (road_r - vx) * f
        cw = (hi - lo) * rng.uniform(0.22, 0.35)
        cx = rng.uniform(lo, max(lo + 1, hi - cw))
        ch = cw * 0.45
        body = _jitter(rng, [(200, 30, 30), (30, 60, 170), (230, 230, 230), (30, 30, 30), (200, 180, 40)][rng.integers(5)], 12)
        _rect(img, mask, cx, cy - ch * 0.6, cx + cw, cy, body, CAR)
        _rect(img, mask, cx + cw * 0.2, cy - ch, cx + cw * 0.8, cy - ch * 0.55, tuple(int(c * 0.6) for c in body), CAR)
        for wx in (cx + cw * 0.22, cx + cw * 0.78):
            _ellipse(img, mask, (wx, cy), (cw * 0.1, cw * 0.1), (20, 20, 20), CAR)

    # person-like figures on the sidewalks: legs, torso, head
    for _ in range(rng.integers(0, 4)):
        f = rng.uniform(0.2, 0.95)
        py = horizon + (h - horizon) * f
        side = rng.choice([-1, 1])
        edge = vx + ((road_l if side < 0 else road_r) - vx) * f
        px = edge + side * walk * f * rng.uniform(0.3, 0.8)
        ph = h * 0.35 * f + 4
        shirt = _jitter(rng, [(200, 40, 40), (40, 160, 60), (240, 200, 40), (150, 60, 170), (30, 30, 30)][rng.integers(5)], 20)
        trousers = _jitter(rng, (40, 50, 90), 15)
        lw = max(1, int(ph * 0.06))
        cv2.line(img, (int(px - ph * 0.06), int(py)), (int(px), int(py - ph * 0.45)), trousers, lw)
        cv2.line(img, (int(px + ph * 0.06), int(py)), (int(px), int(py - ph * 0.45)), trousers, lw)
        cv2.line(mask, (int(px - ph * 0.06), int(py)), (int(px), int(py - ph * 0.45)), PERSON, lw)
        cv2.line(mask, (int(px + ph * 0.06), int(py)), (int(px), int(py - ph * 0.45)), PERSON, lw)
        _ellipse(img, mask, (px, py - ph * 0.62), (ph * 0.11, ph * 0.2), shirt, PERSON)
        _ellipse(img, mask, (px, py - ph * 0.9), (ph * 0.07, ph * 0.08), _jitter(rng, (225, 185, 150), 20), PERSON)

    # sensor noise and a global exposure change
    noisy = img.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 6, img.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), mask


__all__ = ["GENERATOR_VERSION", "SCENE_CLASSES", "SPLIT_IDS", "render_scene"]
