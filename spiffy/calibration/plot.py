"""Figures of a calibration run: the selected draft graph and held-out NFE reduction vs budget."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402

from ..speculative.graph import formula_str  # noqa: E402


def plot_graph(g: nx.DiGraph, path, title: str = "") -> Path:
    for f in g.nodes:
        g.nodes[f]["_layer"] = g.nodes[f].get("depth") or 0
    pos = nx.multipartite_layout(g, subset_key="_layer", align="horizontal")
    pos = {k: (x, -y) for k, (x, y) in pos.items()}
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * g.number_of_nodes() ** 0.8), 4 + 0.6 * max(
        (g.nodes[f]["_layer"] for f in g.nodes), default=1)))
    labels = {f: (formula_str(f) if f else "root") + (f"\n{g.nodes[f]['count']}" if "count" in g.nodes[f] else "")
              for f in g.nodes}
    nx.draw_networkx(g, pos, ax=ax, labels=labels, node_color="#cfe3ff", node_size=1800, font_size=7,
                     arrowsize=12, edge_color="#667")
    ax.set_title(title or "draft graph (label: {position rank:token rank}, count)")
    ax.axis("off")
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def plot_reduction(report: dict, path) -> Path:
    budgets = report["budgets"]
    sets = report["heldout"] or {"calibration": {"by_budget": {str(D): {k: v["calibration"] for k, v in
                                                                       report["graphs"][str(D)].items()}
                                                                   for D in budgets}}}
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4), squeeze=False)
    for ax, (name, h) in zip(axes[0], sets.items()):
        series = list(next(iter(h["by_budget"].values())).keys())
        for s in series:
            ax.plot(budgets, [h["by_budget"][str(D)][s]["nfe_reduction"] for D in budgets], marker="o", label=s)
        ax.set_xlabel("budget D (draft states per call)")
        ax.set_ylabel("NFE reduction (baseline calls / calls)")
        ax.set_title(f"{name} ({report['model']}, {report['setting']})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    p = Path(path)
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p
