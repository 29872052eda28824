"""The image evaluation report: one self-contained HTML page (inline CSS, plots as base64 PNG).

Sections: the gate's verdict, the model, the metrics, the per-epoch training
curves from model.json's history, the confusion matrix, per-class recall and
a grid of the most confident mistakes. The Kubeflow dashboard shows it in a
sandboxed iframe with no network, so nothing is loaded from elsewhere.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from keel.components._common import report
from keel.components._common.config import EvaluationSection
from keel.components._common.evaluation.verdict import verdict_html

# The curves model.json's history may hold, per epoch (train_deep writes these keys).
LOSS_KEYS = ("train_loss", "val_loss")
ACCURACY_KEYS = ("train_accuracy", "val_accuracy")
HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy", "learning_rate", "seconds")
MAX_MISTAKES = 16
_SIZE = (4.6, 3.6)


def render_report(result, section: EvaluationSection) -> str:
    """The HTML page for an `ImageEvaluation` (evaluate_images.evaluate_image_model's result)."""
    from keel.components._common.evaluation import plots

    info = result.info
    history = info.get("history") or []
    sections = [
        ("Result", verdict_html(result, section)),
        ("Model", report.table(_about(result))),
        ("Metrics", report.table(_metric_rows(result), ["metric", "value"])),
        ("Training curves", _curves(history)),
        ("Confusion matrix", '<div class="grid">' + plots.confusion_plot(result.confusion, result.class_names) + "</div>"),
        ("Per class", '<div class="grid">' + _recall_plot(result.per_class) + "</div>"
         + report.table(_per_class_rows(result.per_class), ["class", "precision", "recall", "f1", "support"])),
        ("Misclassified test images", _mistakes(result)),
    ]
    title = f"Image model evaluation: {info.get('architecture', 'model')} ({result.fmt})"
    subtitle = f"{result.images} test images, {len(result.class_names)} classes"
    return report.page(title, sections, subtitle=subtitle)


def _about(result) -> list[dict]:
    info, spec = result.info, result.info["input"]
    training = info.get("training") or {}
    rows = [
        {"field": "framework", "value": info.get("framework", "unknown")},
        {"field": "architecture", "value": info.get("architecture", "unknown")},
        {"field": "scored export", "value": result.fmt},
        {"field": "input", "value": f"{spec['height']}x{spec['width']}x{spec['channels']} pixels 0..255, {spec['layout']}"},
        {"field": "classes", "value": ", ".join(result.class_names)},
        {"field": "test images", "value": result.images},
    ]
    for key in ("device", "precision", "processes", "epochs_run", "best_epoch", "stopped_early"):
        if key in training:
            rows.append({"field": f"training {key.replace('_', ' ')}", "value": training[key]})
    return rows


def _metric_rows(result) -> list[dict]:
    rows = [{"metric": name, "value": value} for name, value in result.metrics.items()]
    return rows + [{"metric": name, "value": f"not computed: {why}"} for name, why in result.skipped.items()]


def _per_class_rows(per_class: list[dict]) -> list[dict]:
    return [{k: ("undefined" if v is None else v) for k, v in row.items()} for row in per_class]


def _figure(fig, caption: str) -> str:
    return f"<figure>{report.figure_img(fig, caption)}<figcaption>{report.esc(caption)}</figcaption></figure>"


def _series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(row.get("epoch", i + 1), row[key]) for i, row in enumerate(history)
              if isinstance(row.get(key), (int, float)) and np.isfinite(row[key])]
    return [p[0] for p in points], [p[1] for p in points]


def _curves(history: list[dict]) -> str:
    """Loss and accuracy per epoch, plus the table they are drawn from."""
    if not history:
        return '<p class="muted">model.json has no per-epoch history, so there are no training curves.</p>'
    plt = report.pyplot()
    figures = []
    for keys, ylabel, caption in ((LOSS_KEYS, "loss", "Loss per epoch"), (ACCURACY_KEYS, "accuracy", "Accuracy per epoch")):
        drawn = [(key, *_series(history, key)) for key in keys]
        drawn = [d for d in drawn if d[1]]
        if not drawn:
            continue
        fig, ax = plt.subplots(figsize=_SIZE)
        for key, epochs, values in drawn:
            ax.plot(epochs, values, marker="o", lw=2, label=key.replace("_", " "))
        ax.set(xlabel="epoch", ylabel=ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend()
        figures.append(_figure(fig, caption))
    columns = [c for c in HISTORY_COLUMNS if any(c in row for row in history)]
    return '<div class="grid">' + "".join(figures) + "</div>" + report.table(history, columns)


def _recall_plot(per_class: list[dict]) -> str:
    """Recall per class as horizontal bars (classes with no test images are left blank)."""
    plt = report.pyplot()
    names = [row["class"] for row in per_class]
    recall = [row["recall"] if row["recall"] is not None else 0.0 for row in per_class]
    fig, ax = plt.subplots(figsize=(_SIZE[0], max(2.0, 0.3 * len(names) + 1)))
    ax.barh(range(len(names)), recall, color="#3e7cb1")
    ax.set_yticks(range(len(names)), labels=names)
    ax.invert_yaxis()
    ax.set(xlabel="recall", xlim=(0, 1))
    return _figure(fig, "Recall per class")


def _mistakes(result) -> str:
    """The most confident wrong predictions, each a small inline PNG captioned in HTML.

    Pillow, not matplotlib: one subplot per image made this the slowest part of the report.
    """
    wrong = np.flatnonzero(result.test.labels != result.y_pred)
    if not len(wrong):
        return '<p class="muted">Every test image was classified correctly.</p>'
    confidence = result.proba[wrong, result.y_pred[wrong]]
    shown = wrong[np.argsort(-confidence, kind="stable")[:MAX_MISTAKES]]
    names, cells = result.class_names, []
    for index in shown:
        true, predicted = names[int(result.test.labels[index])], names[int(result.y_pred[index])]
        caption = f"#{index}: true {true}, predicted {predicted} ({result.proba[index, int(result.y_pred[index])]:.0%})"
        cells.append(f'<figure><img alt="{report.esc(caption)}" src="data:image/png;base64,{_png(result.test.images[index])}">'
                     f"<figcaption>#{index}<br>true {report.esc(true)}<br>pred {report.esc(predicted)} "
                     f"{result.proba[index, int(result.y_pred[index])]:.0%}</figcaption></figure>")
    note = f'<p class="muted">{len(shown)} of {len(wrong)} misclassified test images, most confident first (# is the test image index).</p>'
    return note + '<div class="grid">' + "".join(cells) + "</div>"


def _png(image: np.ndarray, side: int = 84) -> str:
    """One uint8 [H, W, C] image as base64 PNG, scaled up (nearest neighbour, so pixels stay visible)."""
    from PIL import Image

    pixels = image[..., 0] if image.shape[-1] == 1 else image
    height, width = pixels.shape[:2]
    scale = max(1, side // max(height, width))
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((width * scale, height * scale), Image.NEAREST).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
