"""Training curves from ``metrics.jsonl`` as one PNG: losses on the left, validation AP on the right."""

from __future__ import annotations

import json
from pathlib import Path

from detdemo.fileio import atomic_path


def plot_curves(metrics_path: Path, out_path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in Path(metrics_path).read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_ap) = plt.subplots(1, 2, figsize=(10, 4))
    loss_keys = sorted({k for r in rows for k in r if k.startswith("loss")})
    for k in loss_keys:
        ax_loss.plot(epochs, [r.get(k) for r in rows], marker="o", label=k)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="losses")
    ax_loss.legend(fontsize=7)
    for k in ("bbox_AP", "bbox_AP50", "segm_AP", "segm_AP50"):
        if any(k in r for r in rows):
            ax_ap.plot([r["epoch"] for r in rows if k in r], [r[k] for r in rows if k in r], marker="o", label=k)
    ax_ap.set(xlabel="epoch", ylabel="COCO AP", title="validation", ylim=(0, 1))
    if ax_ap.lines:
        ax_ap.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out_path
