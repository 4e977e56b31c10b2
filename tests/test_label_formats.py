"""Feature explanations from Neuronpedia exports and delphi runs, in and out of saesteer's labels,
on hand-written files in each tool's format."""

from __future__ import annotations

import gzip
import json

import pytest

import saesteer
from saesteer import SAEFormatError
from saesteer.cli import main
from saesteer.label_formats import read_delphi, read_explanations, read_neuronpedia, to_neuronpedia
from saesteer.labels import FeatureLabels
from tiny import random_sae


def _np_row(i, text, layer="6-res-jb"):
    return {"modelId": "gpt2-small", "layer": layer, "index": str(i), "description": text,
            "explanationModelName": "gpt-4o-mini", "typeName": "oai_token-act-pair", "embedding": None}


@pytest.fixture
def sae_dir(tmp_path):
    return str(saesteer.save_sae(random_sae(d_in=32, d_sae=64), tmp_path / "sae"))


def test_neuronpedia_batch_files_json_and_jsonl(tmp_path):
    folder = tmp_path / "explanations"
    folder.mkdir()
    for b, rows in enumerate([[_np_row(3, "references to the sea"), _np_row(7, "legal citations")],
                              [_np_row(12, "Python decorators"), _np_row(3, "a second, later explanation")]]):
        with gzip.open(folder / f"batch-{b}.jsonl.gz", "wt") as f:
            f.write("\n".join(json.dumps(r) for r in rows))
    texts, source = read_neuronpedia(folder)
    assert texts == {3: "references to the sea", 7: "legal citations", 12: "Python decorators"}
    assert "6-res-jb" in source and "gpt-4o-mini" in source
    array = tmp_path / "export.json"
    array.write_text(json.dumps([_np_row(1, "numbers"), _np_row(2, "dates", layer="7-res-jb")]))
    with pytest.raises(SAEFormatError, match="several SAEs"):
        read_neuronpedia(array)
    assert read_neuronpedia(array, layer="7-res-jb")[0] == {2: "dates"}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"index": "1"}]))
    with pytest.raises(SAEFormatError, match="'index' and 'description'"):
        read_neuronpedia(bad)


def test_delphi_explanations_folder(tmp_path):
    run = tmp_path / "results" / "run1"
    ex = run / "explanations"
    ex.mkdir(parents=True)
    (ex / "layers.6_latent4.txt").write_text(json.dumps("mentions of rain and weather"))
    (ex / "layers.6_latent9.txt").write_text(json.dumps("closing brackets in code"))
    (ex / "layers.8_latent1.txt").write_text(json.dumps("another module"))
    with pytest.raises(SAEFormatError, match="several modules"):
        read_delphi(run)
    texts, source = read_delphi(run, module="layers.6")
    assert texts == {4: "mentions of rain and weather", 9: "closing brackets in code"} and source == "delphi layers.6"
    assert read_explanations(run, which="layers.6")[0] == texts
    (ex / "layers.6_latent5.txt").write_text("{not json")
    with pytest.raises(SAEFormatError, match="not a delphi explanation"):
        read_delphi(run, module="layers.6")


def test_imported_explanations_are_what_labels_show_and_search(tmp_path):
    auto = FeatureLabels([{"feature": 3, "label": "'sea' 'ocean' | books 80%", "top_tokens": ["sea"], "density": 0.01}])
    merged = auto.with_explanations({3: "references to the sea and sailing", 9: "dates in legal text"}, "neuronpedia x")
    assert merged[3] == "references to the sea and sailing" and merged.info(3)["label"].startswith("'sea'")
    assert merged[9] == "dates in legal text" and auto[3].startswith("'sea'")  # the original is unchanged
    assert [m.feature for m in merged.search("sailing")] == [3]
    assert [m.feature for m in merged.search("legal")] == [9]
    rows = to_neuronpedia(merged, model_id="smollm2", layer="15-res-saesteer")
    assert {r["index"] for r in rows} == {"3", "9"} and rows[0]["modelId"] == "smollm2"
    back = tmp_path / "np.json"
    back.write_text(json.dumps(rows))
    assert read_neuronpedia(back)[0] == {3: merged[3], 9: merged[9]}


def test_cli_import_then_features_show_and_search_then_export(sae_dir, tmp_path, capsys):
    export = tmp_path / "np.jsonl"
    export.write_text("\n".join(json.dumps(_np_row(i, t)) for i, t in [(5, "quotation marks in dialogue"),
                                                                        (11, "the word 'because'")]))
    assert main(["label", "--sae", sae_dir, "--import", str(export)]) == 0
    assert "imported 2 explanations" in capsys.readouterr().out
    assert saesteer.load_sae(sae_dir).labels[5] == "quotation marks in dialogue"
    assert main(["features", "--sae", sae_dir, "--show", "5"]) == 0
    out = capsys.readouterr().out
    assert "feature 5: quotation marks in dialogue" in out and "explanation from neuronpedia" in out
    assert main(["features", "--sae", sae_dir, "--search", "dialogue"]) == 0
    assert capsys.readouterr().out.split()[0] == "5"
    out_file = tmp_path / "out" / "batch-0.jsonl.gz"
    assert main(["label", "--sae", sae_dir, "--export-neuronpedia", str(out_file), "--np-model-id", "m",
                 "--np-layer", "3-res"]) == 0
    assert read_neuronpedia(out_file.parent)[0] == {5: "quotation marks in dialogue", 11: "the word 'because'"}
    too_big = tmp_path / "big.json"
    too_big.write_text(json.dumps([_np_row(999, "x")]))
    assert main(["label", "--sae", sae_dir, "--import", str(too_big)]) == 2
    assert "d_sae=64" in capsys.readouterr().err
