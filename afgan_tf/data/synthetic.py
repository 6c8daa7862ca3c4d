"""A small ffhq-dataset-v2.json-style input built from the embedded face photos (for demos and smoke tests).

  python -m afgan_tf.data.synthetic OUT_DIR [--copies=4] [--seed=0]

Writes ``OUT_DIR/in-the-wild-images/00000/NNNNN.png`` (each bundled face photo, also rescaled and placed on
larger canvases so the face is not centred) and ``OUT_DIR/ffhq-dataset-v2.json`` whose ``face_landmarks`` are
68 dlib-layout points *made up* from the detected face box (eye centres at 30 % / 70 % of the box width and
40 % of its height, mouth corners at 35 % / 65 % and 80 %). Not real landmarks — enough to exercise the
FFHQ-U path of ``tools/dataset_tool.py`` end to end on real photographs.
"""
import argparse
import json
import os

import numpy as np
import PIL.Image

from .default import load_photos


def landmarks_from_box(box, rng):
    """Made-up 68-point landmarks (x, y) consistent with an axis-aligned face box ``[x0, y0, x1, y1]``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    p = lambda fx, fy: np.array([x0 + fx * w, y0 + fy * h])  # noqa: E731
    lm = np.zeros([68, 2])
    lm[0:17] = [p(0.05 + 0.9 * t, 0.45 + 0.5 * np.sin(np.pi * t)) for t in np.linspace(0, 1, 17)]  # jaw
    lm[17:27] = [p(0.15 + 0.7 * t, 0.28) for t in np.linspace(0, 1, 10)]  # brows
    lm[27:36] = [p(0.5, 0.45 + 0.2 * t) for t in np.linspace(0, 1, 9)]  # nose
    for k, cx in ((36, 0.3), (42, 0.7)):  # eyes: 6 points around the centre
        ang = np.linspace(0, 2 * np.pi, 6, endpoint=False)
        lm[k:k + 6] = p(cx, 0.4) + np.stack([np.cos(ang) * 0.08 * w, np.sin(ang) * 0.03 * h], 1)
    lm[48:68] = [p(0.35 + 0.3 * (i % 10) / 9, 0.8 + 0.02 * (i // 10)) for i in range(20)]
    lm[48] = p(0.35, 0.8)
    lm[54] = p(0.65, 0.8)
    return lm + rng.randn(68, 2) * 0.01 * w


def make_ffhq_like(out_dir, copies=4, seed=0):
    """Writes the images + json; returns the json path."""
    rng = np.random.RandomState(seed)
    faces, _ = load_photos()
    meta = {}
    idx = 0
    for name, img, box, _ in faces:
        for k in range(copies):
            scale = 1.0 if k == 0 else rng.uniform(0.8, 1.3)
            im = img.resize((int(round(img.size[0] * scale)), int(round(img.size[1] * scale))), PIL.Image.LANCZOS)
            b = np.asarray(box) * scale
            if k > 0:  # place on a larger, darker canvas at a random offset: faces off-centre
                cw, ch = int(im.size[0] * 1.6), int(im.size[1] * 1.4)
                ox, oy = int(rng.randint(0, cw - im.size[0] + 1)), int(rng.randint(0, ch - im.size[1] + 1))
                canvas = PIL.Image.new("RGB", (cw, ch), tuple(int(v) for v in rng.randint(0, 80, 3)))
                canvas.paste(im, (ox, oy))
                im, b = canvas, b + [ox, oy, ox, oy]
            rel = f"in-the-wild-images/{idx - idx % 1000:05d}/{idx:05d}.png"
            path = os.path.join(out_dir, *rel.split("/"))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            im.save(path)
            meta[str(idx)] = dict(category="training",
                                  metadata=dict(photo_title=f"{name} (embedded sample photo)", license="see package"),
                                  in_the_wild=dict(file_path=rel, pixel_size=list(im.size), face_rect=b.tolist(),
                                                   face_landmarks=landmarks_from_box(b, rng).round(2).tolist()))
            idx += 1
    js = os.path.join(out_dir, "ffhq-dataset-v2.json")
    with open(js, "w") as fh:
        json.dump(meta, fh)
    return js


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    js = make_ffhq_like(a.out_dir, a.copies, a.seed)
    print(f"wrote {js} and {os.path.join(a.out_dir, 'in-the-wild-images')}")


if __name__ == "__main__":
    main()
