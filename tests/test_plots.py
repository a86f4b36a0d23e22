"""Per-run eval figures: absorption per letter with the letters that failed the probe gate marked, probing per task."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from PIL import Image

from masksae.plots import draw_absorption_per_letter, eval_figures


def _letter(letter: str, f1: float, full: float) -> dict:
    return {"letter": letter, "probe_f1": f1, "n_probe_true_positives": 5, "full_absorption_rate": full, "mean_absorption_fraction": full / 2}


def test_letters_that_failed_the_probe_gate_are_drawn_grey_hatched_with_their_f1() -> None:
    letters = [_letter("a", 0.9, 0.2), _letter("b", 0.55, 0.4), _letter("c", 0.8, 0.1)]
    figure, axis = plt.subplots()
    draw_absorption_per_letter(axis, letters, min_probe_f1=0.6)
    hatched = [patch for patch in axis.patches if patch.get_hatch()]
    assert len(axis.patches) == 6 and len(hatched) == 2  # both bars of "b"
    assert {round(patch.get_x() + patch.get_width() / 2) for patch in hatched} == {1}
    assert [text.get_text() for text in axis.texts] == ["F1 0.55"]
    assert "2 of 3 letters pass" in axis.get_title()
    plt.close(figure)


def test_eval_figures_draws_the_tables_an_eval_produced(tmp_path: Path) -> None:
    tables = {"absorption_per_letter.json": [_letter("a", 0.9, 0.2)],
              "sparse_probing_per_task.json": [{"task": "code_language/python", "sae_top_1_test_accuracy": 0.7,
                                                "sae_top_5_test_accuracy": 0.8, "llm_test_accuracy": 0.95, "llm_top_1_test_accuracy": 0.6}]}
    figures = eval_figures(tables, 0.6, tmp_path)
    assert [figure.name for figure in figures] == ["absorption_per_letter.png", "sparse_probing_per_task.png"]
    for figure in figures:
        with Image.open(figure) as image:
            assert image.format == "PNG" and image.width > 300
    assert eval_figures({"ood_per_task.json": []}, 0.6, tmp_path / "none") == []
