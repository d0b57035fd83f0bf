"""`make demo`: corrupt a few test digits of each kind, restore them, and save a picture grid.

Run as `python -m restorecli.demo OUT_DIR`. It writes OUT_DIR/grid.png, whose rows are clean,
corrupted and restored digits, with one column group per corruption kind. It also writes the
clean and corrupted files of the first digit, so that `restorecli restore` can be tried on them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from restorecli.corruptions import KINDS, protocol_corrupt
from restorecli.data import mnist
from restorecli.data.images import write_png
from restorecli.metrics import psnr
from restorecli.plots import tile
from restorecli.restoration import Restorer

DIGITS_PER_KIND = 4


def main(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    restorer = Restorer.load()
    split = mnist.load_test_split()
    # Digits 0..9 spread over the kinds: test rows are sorted by class, 50 per class.
    picks = np.arange(len(KINDS) * DIGITS_PER_KIND) * 50 // 2 % len(split.rows)

    clean, corrupted = [], []
    for position, index in enumerate(picks):
        kind = KINDS[position // DIGITS_PER_KIND]
        y, _ = protocol_corrupt(split.images[index], kind, int(split.rows[index]))
        clean.append(split.images[index])
        corrupted.append(y)
    clean, corrupted = np.stack(clean), np.stack(corrupted)
    restored = restorer.restore_batch(corrupted, steps=1)

    write_png(out_dir / "grid.png", tile([clean, corrupted, restored]))
    write_png(out_dir / "digit-clean.png", clean[0])
    write_png(out_dir / "digit-corrupted.png", corrupted[0])

    print(f"shipped restorer: {restorer.checkpoint_path}")
    for k, kind in enumerate(KINDS):
        part = slice(k * DIGITS_PER_KIND, (k + 1) * DIGITS_PER_KIND)
        before = psnr(clean[part], corrupted[part]).mean()
        after = psnr(clean[part], restored[part]).mean()
        print(f"{kind:12s} PSNR {before:5.2f} dB corrupted -> {after:5.2f} dB restored (1 network evaluation)")
    print(
        f"picture grid: {out_dir / 'grid.png'} (rows: clean, corrupted, restored; columns: "
        f"{DIGITS_PER_KIND} each of {', '.join(KINDS)}, left to right)"
    )
    print(f"try: restorecli restore {out_dir / 'digit-corrupted.png'} {out_dir / 'digit-restored.png'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo"))
