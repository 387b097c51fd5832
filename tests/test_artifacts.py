"""docs/artifacts.md against the code: every Parquet table the page documents is the schema
that equihash.io defines for that path, and every path with a fixed schema is documented.
(tests/test_workflow.py checks the files of a real run against the same page.)"""

import re
from pathlib import Path

import pyarrow as pa
import pytest

from equihash import io

DOC = Path(__file__).resolve().parents[1] / "docs" / "artifacts.md"


def documented_parquet_schemas(text: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Path under ``results`` -> [(column, Arrow type as written)] of each ``### `....parquet```
    section of docs/artifacts.md, in the order of its table."""
    text = DOC.read_text() if text is None else text
    sections = re.split(r"^### `([^`]+\.parquet)`\s*$", text, flags=re.M)
    tables = {}
    for path, body in zip(sections[1::2], sections[2::2]):
        body = body.split("\n#")[0]  # up to the next heading
        tables[path] = re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", body, flags=re.M)
    return tables


def arrow_type_text(kind: pa.DataType) -> str:
    """An Arrow type as docs/artifacts.md writes it: Arrow's text without the name of a list's
    item field (``item`` when built, ``element`` when read back from Parquet)."""
    return re.sub(r"<\w+: ", "<", str(kind))


def documented_type(written: str, *, m: int, nbytes: int) -> str:
    """A documented type with m (cells), B (bytes) and k (bits) filled in."""
    return written.replace("[m]", f"[{m}]").replace("[B]", f"[{nbytes}]").replace("[k]", f"[{8 * nbytes}]")


def test_the_page_documents_every_parquet_artifact_with_a_fixed_schema():
    documented = documented_parquet_schemas()
    assert set(io.PARQUET_ARTIFACTS) <= set(documented), set(io.PARQUET_ARTIFACTS) - set(documented)
    assert set(documented) - set(io.PARQUET_ARTIFACTS) == {"models/{task}/{model}/{variant}/eval_log.parquet"}


@pytest.mark.parametrize("m, nbytes", [(4, 8), (2, 8), (2, 32)])
def test_documented_columns_and_types_are_the_schemas_of_equihash_io(m, nbytes):
    documented = documented_parquet_schemas()
    for path, schema_of in io.PARQUET_ARTIFACTS.items():
        schema = schema_of(m, nbytes)
        expected = [(field.name, arrow_type_text(field.type)) for field in schema]
        written = [(name, documented_type(kind, m=m, nbytes=nbytes)) for name, kind in documented[path]]
        assert written == expected, path


def test_the_eval_log_columns_are_those_the_training_evaluation_writes():
    from equihash.train.evaluation import EVAL_LOG_COLUMNS

    documented = documented_parquet_schemas()["models/{task}/{model}/{variant}/eval_log.parquet"]
    assert [name for name, _ in documented] == EVAL_LOG_COLUMNS


def test_the_parser_reads_a_known_page():
    page = "# x\n### `a/b.parquet`\n\n| column | type | meaning |\n| --- | --- | --- |\n" \
           "| `id` | `uint64` | position |\n| `code` | `fixed_size_binary[B]` | code |\n\n## next\n| `z` | `int8` | no |\n"
    assert documented_parquet_schemas(page) == {"a/b.parquet": [("id", "uint64"), ("code", "fixed_size_binary[B]")]}
    assert documented_type("fixed_size_list<float>[k]", m=4, nbytes=8) == arrow_type_text(pa.list_(pa.float32(), 64))
    assert arrow_type_text(pa.list_(pa.field("element", pa.uint64()))) == "list<uint64>"
