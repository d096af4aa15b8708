"""What an audit writes: PNGs, a self-contained ``audit.html`` (thumbnails as data URIs, so the
page can be mailed or opened anywhere) and the one-screen summary."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from runway_cnn import plots

THUMB = 96  # pixels, the longer side of a thumbnail


def write_outputs(audit, result: dict) -> dict:
    """The PNGs and ``audit.html`` in the output dir; returns their paths."""
    out = audit.out
    written = {"json": str(out / "audit.json")}
    written["similarity_png"] = str(plots.plot_nearest_similarity(
        audit.nearest_cosine, result["near_duplicates"]["threshold"],
        out / "nearest_similarity.png"))
    for attribute, matrix, names in getattr(audit, "confusion", []):
        name = "confusion" + (f"_{attribute}" if attribute else "")
        written[f"{name}_png"] = str(plots.plot_confusion_matrix(
            matrix, names, out / f"{_file_part(name)}.png",
            title="out-of-fold confusion" + (f": {attribute}" if attribute else "")))
    if result.get("shortcut") and "group_balanced_accuracy" in result["shortcut"]:
        written["shortcut_png"] = str(plots.plot_shortcut_check(result["shortcut"],
                                                                out / "shortcut.png"))
    page = out / "audit.html"
    tmp = page.with_name(f".{page.name}.tmp")
    tmp.write_text(render_html(audit, result, written), encoding="utf-8")
    tmp.replace(page)
    written["html"] = str(page)
    return written


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def thumbnails(audit, files: list[str]) -> dict[str, str]:
    """file → a small JPEG as a ``data:`` URI."""
    index = {s: i for i, s in enumerate(audit.sources)}
    rows = sorted({index[f] for f in files})
    uris = {}
    for i, (_, image) in zip(rows, audit.images(rows)):
        image.thumbnail((THUMB, THUMB))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
        uris[audit.sources[i]] = "data:image/jpeg;base64," + base64.b64encode(
            buffer.getvalue()).decode("ascii")
    return uris


def _png_uri(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def render_html(audit, result: dict, written: dict) -> str:
    cap = audit.config.max_shown
    exact = result["exact_duplicates"][:cap]
    near = result["near_duplicates"]["pairs"][:cap]
    errors = result.get("label_errors", [])[:cap]
    outliers = result["outliers"][:cap]
    files = [f for d in exact for f in d["files"][:4]] + [f for p in near for f in p["files"]]
    files += [e["file"] for e in errors] + [o["file"] for o in outliers]
    thumbs = thumbnails(audit, files)
    e = html.escape

    def figure(file: str, caption: str) -> str:
        return (f'<figure><img src="{thumbs[file]}" alt=""><figcaption><code>{e(file)}</code>'
                f"<br>{caption}</figcaption></figure>")

    def section(title: str, total: int, shown: int, body: str, note: str = "") -> str:
        more = f" (the first {shown} of {total}; audit.json has all)" if total > shown else ""
        return (f"<h2>{e(title)}: {total}{more}</h2>" + (f"<p>{note}</p>" if note else "")
                + (body or "<p>none</p>"))

    parts = [f"<h1>Data audit of <code>{e(result['dataset'])}</code></h1>",
             "<pre>" + e(summary_text(result)) + "</pre>"]
    parts.append(section("Exact duplicates (same file bytes)", len(result["exact_duplicates"]),
                         len(exact), "".join(
        '<div class="row">' + "".join(figure(f, f"{e(s or '')} · {e(lbl)}") for f, s, lbl in zip(
            d["files"][:4], d["splits"][:4], d["labels"][:4])) + f"<p>{e(d['scope'])}</p></div>"
        for d in exact)))
    threshold = result["near_duplicates"]["threshold"]
    parts.append(section(
        f"Near duplicates (feature cosine ≥ {threshold})", result["near_duplicates"]["count"],
        len(near), "".join(
            '<div class="row">' + "".join(figure(f, f"{e(s or '')} · {e(lbl)}")
                                          for f, s, lbl in zip(p["files"], p["splits"],
                                                               p["labels"]))
            + f"<p>{e(p['scope'])}<br>cosine {p['cosine']}<br>dHash {p['hash_bits']} bits"
            + (" (agrees)" if p["hash_agrees"] else " (differs)") + "</p></div>"
            for p in near),
        "The perceptual hash (dHash, mirrored too) agrees when at most "
        f"{result['near_duplicates']['hash_near_bits']} of 64 bits differ; pairs where it "
        "differs are often similar photos (the next look of a show), not copies."))
    if "label_errors" in result and (result["label_errors"] or "label" in str(
            result.get("label_error_method", ""))):
        parts.append(section(
            "Suspected label errors", len(result["label_errors"]), len(errors),
            '<div class="grid">' + "".join(figure(
                x["file"], (f"{e(x['attribute'])}: " if "attribute" in x else "")
                + f"given <b>{e(x['given'])}</b>, suggested <b>{e(x['suggested'])}</b>"
                f"<br>p(given) {x['self_confidence']}, p(suggested) "
                f"{x['suggested_probability']}") for x in errors) + "</div>" if errors else "",
            e(result.get("label_error_method", "")) + "; lowest self-confidence first."))
    parts.append(section("Outliers (lowest density in feature space)", len(result["outliers"]),
                         len(outliers), '<div class="grid">' + "".join(figure(
                             o["file"], f"{e(o['label'])}<br>mean cosine distance to 10 "
                             f"neighbours {o['mean_cosine_distance']}") for o in outliers)
                         + "</div>" if outliers else ""))
    confused = result.get("confused_pairs", [])
    if confused:
        rows = "".join(f"<tr><td>{e(c.get('attribute', ''))}</td><td>{e(c['labels'][0])} ↔ "
                       f"{e(c['labels'][1])}</td><td>{c['share']}</td><td>{c['images']}</td>"
                       "</tr>" for c in confused)
        parts.append("<h2>Classes the features do not separate</h2><table><tr><th></th>"
                     "<th>pair</th><th>share of the pair's photos predicted as the other</th>"
                     "<th>images</th></tr>"
                     + rows + "</table>")
    for key, title in (("confusion_png", "Out-of-fold confusion matrix"),
                       ("shortcut_png", "Shortcut check"),
                       ("similarity_png", "Each photo's nearest other photo")):
        if key in written:
            parts.append(f"<h2>{title}</h2><img class=\"plot\" src=\"{_png_uri(written[key])}\">")
    style = ("body{font-family:sans-serif;margin:1.5em;max-width:1400px}figure{display:"
             "inline-block;width:180px;margin:4px;vertical-align:top;font-size:11px}"
             "figure img{max-width:96px;max-height:96px;display:block}code{word-break:"
             "break-all}.row{border-bottom:1px solid #ddd;padding:4px}.row p{display:"
             "inline-block;font-size:12px;vertical-align:top}.plot{max-width:900px}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}")
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>runway_cnn audit</title>"
            f"<style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>\n")


def summary_text(result: dict) -> str:
    """The one-screen summary printed after an audit."""
    lines = [f"audit of {result['dataset']}: {result['images']} images, "
             f"{len(result['labels'])} labels ({result['task']}), backbone {result['backbone']}"
             + (" (cached features)" if result["features_cached"] else ""),
             "splits: " + result["splits"] + (
                 " — " + ", ".join(f"{k} {v}" for k, v in result["split_counts"].items())
                 if not result["splits"].startswith("none") else "")]
    skipped = result.get("skipped_files", [])
    if skipped:
        lines.append(f"skipped {len(skipped)} files it cannot use: " + ", ".join(
            f"{d['path']} ({d['reason']})" for d in skipped[:5])
            + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
            + " (data_report.json lists every one)")
    exact = result["exact_duplicates"]
    across = [d for d in exact if d["scope"].startswith("across")]
    lines.append(f"exact duplicates: {len(exact)} groups, "
                 f"{sum(len(d['files']) for d in exact)} files"
                 + (f"; {len(across)} groups across splits" if across else "")
                 + (f" (e.g. {' = '.join(exact[0]['files'][:2])})" if exact else ""))
    near = result["near_duplicates"]
    conflicting = sum(not p["same_label"] for p in near["pairs"]) + sum(
        not d["same_label"] for d in exact)
    lines.append(f"near duplicates (cosine >= {near['threshold']}): {near['count']} pairs, "
                 f"{near['across_splits']} across splits; the perceptual hash agrees on "
                 f"{near['hash_agrees']}" + (
                     f"; {conflicting} copies carry "
                     f"{result.get('label_conflicts_carry', 'different labels')}"
                     if conflicting else ""))
    if result.get("label_error_method"):
        errors = result["label_errors"]
        example = (f" (worst: {errors[0]['file']}: given {errors[0]['given']}, suggested "
                   f"{errors[0]['suggested']})") if errors else ""
        accuracy = ", ".join(f"{k} {v}" for k, v in result["out_of_fold_accuracy"].items())
        lines.append(f"label-error candidates: {len(errors)}{example}; out-of-fold accuracy "
                     f"{accuracy[:200]}")
    confused = result.get("confused_pairs", [])[:3]
    if confused:
        lines.append("most confused (share of a pair's photos predicted as the other): "
                     + ", ".join((f"{c['attribute']}: " if "attribute" in c else "")
                                 + f"{c['labels'][0]} <-> {c['labels'][1]} {c['share']:.2f}"
                                 for c in confused))
    outliers = result["outliers"]
    if outliers:
        lines.append(f"outliers: {len(outliers)} most isolated photos (e.g. "
                     f"{outliers[0]['file']})")
    check = result.get("shortcut")
    if check and "group_balanced_accuracy" in check:
        verdict = {True: "AT RISK: the group is as easy to predict as the label, a random "
                         "split measures the group", False: "the label is easier than the group",
                   None: "no verdict"}[check["at_risk"]]
        c = check
        lines.append(f"shortcut check: group balanced accuracy {c['group_balanced_accuracy']:.3f}"
                     f" (chance {c['group_chance']:.3f}, {c['groups_with_two_or_more_photos']} "
                     f"groups) vs label {c['label_balanced_accuracy']:.3f} (chance "
                     f"{c['label_chance']:.3f}): {verdict}")
    elif check:
        lines.append(f"shortcut check: not done ({check.get('not_done')})")
    for text in result["not_done"] + result["notes"]:
        lines.append(f"note: {text}")
    if "fix" in result:
        lines.append(f"--fix: {result['fix']['manifest']} keeps {result['fix']['kept']} of "
                     f"{result['images']} images ({len(result['fix']['removed'])} removed"
                     + (f", cells made unknown in {len(result['fix']['cells_made_unknown'])}"
                        if result['fix']['cells_made_unknown'] else "")
                     + "); no photo was touched" + (
                         f"; {len(result['fix']['label_conflicts'])} copies with different "
                         "labels kept (label conflicts: check them)"
                         if result['fix']['label_conflicts'] else ""))
    seconds = result["seconds"]
    if "outputs" in result:
        lines.append(f"wrote {result['outputs']['html']}, audit.json and PNGs beside it "
                     f"({seconds['total']:.0f} s; features {seconds['features']:.0f} s)")
    return "\n".join(lines)
