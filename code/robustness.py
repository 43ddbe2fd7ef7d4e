"""The robustness report of `main.py -a --eps-sweep`: accuracy under PGD at several epsilons, as a
Markdown table (robustness.md) and a plot (robustness.png) in the run folder."""
import utils


def write_report(result, run_dir, checkpoint_path):
    """robustness.md (a Markdown table) and robustness.png (accuracy against epsilon)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    lines = [f"# Accuracy under PGD attack\n\nModel: `{checkpoint_path}`, {result['count']} val images, "
             "10 steps of 0.01 (targeted at the least confident label).\n",
             "| epsilon | Acc@1 (%) | Acc@5 (%) |", "| ---: | ---: | ---: |"]
    lines += [f"| {row['epsilon']} | {row['top1']:.2f} | {row['top5']:.2f} |" for row in result["attacks"]]
    utils.write_text(run_dir / "robustness.md", "\n".join(lines) + "\n")

    eps = [row["epsilon"] for row in result["attacks"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps, [row["top1"] for row in result["attacks"]], "o-", label="top-1")
    ax.plot(eps, [row["top5"] for row in result["attacks"]], "s-", label="top-5")
    ax.set_xlabel("epsilon (L-inf, normalized input)")
    ax.set_ylabel("val accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    utils.save_figure(fig, run_dir / "robustness.png")
