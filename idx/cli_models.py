"""idx commands (see idx/cli.py)."""
from idx.cli import check_output, cli, emit, json_option, segmenter_options  # noqa: F401

from pathlib import Path  # noqa: E402

import click  # noqa: E402

from models import train_defaults as TD  # noqa: E402  (no torch)


def make_segmenter(weights, device, mc_samples, tu, no_filter, no_tta=False, min_size=None,
                   compile_kernels=False, zoom=None, no_snap=False, smooth=None):
    """A ParticleSegmenter from CLI options (imports torch)."""
    from models.infer import ParticleSegmenter

    return ParticleSegmenter(weights=weights, device=device, mc_samples=mc_samples,
                             tu=tu, filter=not no_filter, tta=False if no_tta else None,
                             min_instance_px=min_size, compile=compile_kernels, zoom=zoom,
                             edges=False if no_snap else None, smooth=smooth)


@cli.command()
@click.argument("image", type=click.Path(dir_okay=False))
@segmenter_options
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the instance map (16-bit PNG) here, and beside it NAME-overlay.png: the "
              "particles' outlines over the micrograph.")
@json_option
def segment(image, weights, device, mc_samples, tu, no_filter, no_tta, min_size, zoom, no_snap, smooth,
            compile_kernels, output, as_json):
    """Segment the particles of one micrograph with BPartIS.

    \b
        idx segment fig2b.png --mc-samples 10 -o fig2b-labels.png --json
    """
    from idx.errors import IdxError
    from miners.images import load_image

    if output:
        check_output(output, "-o")
        if Path(output).suffix.lower() not in (".png", ".tif", ".tiff"):
            raise IdxError(f"-o {output}: the instance map is written as a 16-bit PNG or TIFF; "
                           "give a name ending in .png or .tif")
    array = load_image(image)
    result = make_segmenter(weights, device, mc_samples, tu, no_filter, no_tta, min_size,
                            compile_kernels, zoom, no_snap, smooth).segment(array)
    payload = {"image": image, **result.to_dict()}
    if output:
        from PIL import Image

        from idx.plots import plot_overlay

        Image.fromarray(result.labels.astype("uint16")).save(output)
        overlay = Path(output).with_name(Path(output).stem + "-overlay.png")
        plot_overlay(array, result.labels, title=f"{Path(image).name}: {result.count} particles").savefig(overlay)
        payload |= {"labels_png": output, "overlay_png": str(overlay)}
    kind = result.params["filter_kind"]
    emit(payload, as_json, text=f"{image}: {result.count} particles " + (
        "(no false-positive filter)" if kind == "none" else
        f"({result.n_removed} removed by the {'learned' if kind == 'learned' else 'uncertainty'} filter)"))


@cli.command()
@click.option("--data", type=click.Path(file_okay=False), default=None, help="EMPS folder.")
@click.option("--out", default=TD.OUT, show_default=True, help="Run folder (resumes from last.pt).")
@click.option("--epochs", default=TD.EPOCHS, show_default=True)
@click.option("--batch-size", default=TD.BATCH_SIZE, show_default=True)
@click.option("--crop", default=TD.CROP, show_default=True, help="Training crop side (px of the training image).")
@click.option("--image-size", default=TD.IMAGE_SIZE, show_default=True,
              help="Side the training images are resized to before cropping (512: the inference scale; 256 "
                   "with --crop 256: whole micrographs, as published).")
@click.option("--device", default=TD.DEVICE, show_default=True)
@click.option("--eval-every", default=TD.EVAL_EVERY, show_default=True, help="Validation AP every N epochs (0: never).")
@click.option("--init", type=click.Path(dir_okay=False), default=None,
              help="Warm-start from these weights (e.g. the shipped ones) in a new run folder.")
@click.option("--lr", default=TD.LEARNING_RATE, show_default=True, help="Adam learning rate (peak of the schedule).")
@click.option("--schedule", type=click.Choice(TD.SCHEDULES), default=TD.SCHEDULES[0], show_default=True,
              help="Poly decay over --epochs, or constant (for weight averaging).")
@click.option("--snapshot-every", default=TD.SNAPSHOT_EVERY, show_default=True, help="Keep the weights every N epochs and at the last (0: never).")
@click.option("--augment", type=click.Choice(TD.AUGMENTATIONS), default=TD.AUGMENTATIONS[0], show_default=True,
              help="published: flips, turns, crops, colour jitter; em: also mosaics, gamma, blur, noise.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for torch (default: all).")
@click.option("--workers", type=int, default=TD.WORKERS, show_default=True,
              help="Processes making the augmented batches (0: this one; a GPU run wants several).")
@click.option("--freeze-bn", is_flag=True, default=False,
              help="Batch-norm layers keep their running statistics (a warm start with --init, as the published "
                   "fine-tune does).")
def train(data, out, epochs, batch_size, crop, image_size, device, eval_every, init, lr, schedule,
          snapshot_every, augment, threads, workers, freeze_bn):
    """Train BPartIS on EMPS (resumable; a checkpoint every epoch).

    \b
        idx train --data ../shared/data/emps --out runs/bpartis --epochs 200
        idx train --init models/weights/bpartis-emps.pt --crop 512 --batch-size 4 --lr 1e-4 --augment em
    """
    from models.data import default_emps_dir
    from models.train import train as run_training

    run_training(data or default_emps_dir(), out, epochs, batch_size, crop, lr=lr, device=device,
                 eval_every=eval_every, threads=threads, init=init, schedule=schedule,
                 snapshot_every=snapshot_every, augmentation=augment, workers=workers, freeze_bn=freeze_bn,
                 image_size=image_size)


@cli.command()
@click.option("--data", type=click.Path(file_okay=False), default=None, help="EMPS folder.")
@click.option("--split", default="test", show_default=True,
              type=click.Choice(["test", "val", "fit", "train"]))
@segmenter_options
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N images of the split.")
@click.option("--per-image", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Also write one CSV row per image (stem, source article, metrics, recall at IoU 0.5, "
              "particle counts, seconds), worst AP first: where to look at the failures.")
@json_option
def evaluate(data, split, weights, device, mc_samples, tu, no_filter, no_tta, min_size, zoom, no_snap,
             smooth, compile_kernels, limit, per_image, as_json):
    """Evaluate BPartIS on an EMPS split with the published protocol (+ COCO mask AP).

    \b
        idx evaluate --data ../shared/data/emps --split test --json
        idx evaluate --split val --per-image val.csv
    """
    from models.data import article_groups, default_emps_dir, read_split
    from models.evaluate import evaluate_segmenter

    if per_image:  # found out before the long run, not after
        check_output(per_image, "--per-image")
    data = data or default_emps_dir()
    stems = read_split(data, split)[:limit]
    segmenter = make_segmenter(weights, device, mc_samples, tu, no_filter, no_tta, min_size, compile_kernels,
                               zoom, no_snap, smooth)
    groups = article_groups(data, stems)
    summary = evaluate_segmenter(segmenter, data, stems, groups=groups)
    rows = summary.pop("per_image")
    if per_image:
        write_per_image(rows, groups, per_image)
    errors = summary.get("standard_error", {})
    text = "  ".join(f"{k} {v:.3f}" + (f" ± {errors[k]:.3f}" if k in errors else "")
                     for k, v in summary.items() if isinstance(v, float))
    where = f"{len(stems)} images from {summary['n_articles']} articles" + \
        ("; ± one standard error over articles" if errors else "")
    emit(summary, as_json, text=f"{split} ({where}): {text}")


def write_per_image(rows: list[dict], groups: list, path) -> None:
    """``evaluate_segmenter``'s per-image rows as a CSV at ``path``, worst protocol AP first."""
    import pandas as pd

    from models.evaluate import SUMMARY_KEYS

    table = pd.DataFrame([{"stem": row["stem"], "article": group, **{k: row[k] for k in SUMMARY_KEYS},
                           "recall50": row["R50"], "n_gt": row["n_gt"], "n_pred": row["n_pred"],
                           "seconds": row["seconds"]} for row, group in zip(rows, groups)])
    table.sort_values("AP", kind="stable").to_csv(path, index=False, float_format="%.4f")
