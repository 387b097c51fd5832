"""Variant tables (config/variants/<task>/<model>/<table>.tsv): parsing, overrides, errors."""

from pathlib import Path

import pytest
import yaml

from equihash.config import load_variants, override, read_variant_table
from equihash.io import InputError

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())


def table(tmp_path, text, model="ShannonHamming", name="t"):
    path = tmp_path / "MnistMosaic" / model / f"{name}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_rows_override_nested_keys_with_typed_values(tmp_path):
    table(tmp_path, "# a comment\nvariant\tseed\tobjective.shannon_weight\tobjective.gradient\n"
                    "a\t1\t0.02\tpseudo-smooth\nb\t2\t\t\n")
    resolved = load_variants(tmp_path, CONFIG, SCHEMA)[("MnistMosaic", "ShannonHamming")]["t"]
    default = CONFIG["tasks"]["MnistMosaic"]["models"]["ShannonHamming"]
    assert resolved["a"]["seed"] == 1 and resolved["a"]["objective"]["shannon_weight"] == 0.02
    assert resolved["a"]["objective"]["gradient"] == "pseudo-smooth"
    assert resolved["b"] == override(default, {"seed": 2}, "b")  # empty cells keep the defaults
    assert default["seed"] == 0  # the config block itself is untouched


@pytest.mark.parametrize("text, message", [
    ("variant\tobjective.nope\na\t1\n", "t.tsv, variant 'a': unknown key 'objective.nope'"),
    ("variant\tseed\na\t1\na\t2\n", "line 3: duplicate variant name 'a'"),
    ("variant\tseed\na\tmany\n", "t.tsv, variant 'a': key 'seed': 'many' is not of type 'integer'"),
    ("variant\tobjective.gradient\na\tsmooth\n", "key 'objective.gradient'"),
    ("variant\tseed\nmain\t1\n", "variant name 'main'"),
    ("variant\tseed\na\t1\t2\n", "line 2: 3 cells, the header has 2"),
    ("seed\tvariant\n1\ta\n", "the first line must be the header"),
])
def test_bad_tables_name_the_table_row_and_key(tmp_path, text, message):
    table(tmp_path, text)
    with pytest.raises(InputError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        load_variants(tmp_path, CONFIG, SCHEMA)


def test_a_variant_name_is_unique_across_the_tables_of_a_model(tmp_path):
    table(tmp_path, "variant\tseed\nx\t1\n", name="first")
    table(tmp_path, "variant\tseed\nx\t2\n", name="second")
    with pytest.raises(InputError, match="also a variant of table 'first'"):
        load_variants(tmp_path, CONFIG, SCHEMA)


def test_shipped_thesis_tables_are_valid():
    tables = load_variants(REPO / "config" / "variants", CONFIG, SCHEMA)
    shannon = tables[("MnistMosaic", "ShannonHamming")]
    assert len(shannon["shannon_weight"]) == 35  # 7 weights x 5 seeds
    weights = {row["objective"]["shannon_weight"] for row in shannon["shannon_weight"].values()}
    assert min(weights) == 0.005 and max(weights) == 0.06
    assert {row["objective"]["gradient"] for row in shannon["gradient"].values()} == {"normal", "pseudo-smooth"}
    assert set(tables[("MnistMosaic", "HashNet")]) == {"alpha"}
    assert set(tables[("MnistMosaic", "JMLH")]) == {"num_classes"}
    assert read_variant_table(REPO / "config" / "variants" / "MnistMosaic" / "HashNet" / "alpha.tsv")["alpha0.15"] == \
        {"objective.alpha": 0.15}
