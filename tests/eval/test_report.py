"""The layer-kind column of the tables: from the model's per-layer mixers, and "-" for rows written before it
existed (an older eval.json or summary.json still renders)."""
from qwen_sae_jax.eval.plots import layer_labels
from qwen_sae_jax.eval.report import JOINT_COLUMNS, markdown_table, sort_key
from qwen_sae_jax.hooks import layer_kinds
from qwen_sae_jax.train.summary import format_table


def test_layer_kinds_come_from_the_per_layer_mixers():
    assert layer_kinds(3) == ("full", "full", "full")                                   # a Qwen3: all full
    assert layer_kinds(("linear_attn", "self_attn", "linear_attn")) == ("linear", "full", "linear")


def _row(layer, site, kind=None, **extra):
    row = {"name": f"layers.{layer}.{site}__v", "hook": f"layers.{layer}", "layer": layer, "site": site,
           "variant": "v", "d_sae": 8, "l0_mean": 2.0, "fvu": 0.5, **extra}
    if kind is not None:
        row["layer_kind"] = kind
    return row


def test_markdown_tables_name_the_kind_and_older_rows_show_a_dash():
    rows = sorted([_row(1, "attn_out", "full"), _row(0, "attn_out", "linear"), _row(2, "mlp_out")], key=sort_key)
    table = markdown_table(rows).splitlines()
    assert table[0].startswith("| layer | kind | site | variant |")
    assert table[2].startswith("| 0 | linear | attn_out | v | 8 | 2.0 | 0.5000 |")
    assert table[3].startswith("| 1 | full | attn_out |") and table[4].startswith("| 2 | - | mlp_out |")
    joint = markdown_table([{"name": "layer 0 [v]", "layer_kind": "linear", "hooks": ["layers.0.linear_attn"]}],
                           JOINT_COLUMNS).splitlines()
    assert joint[0].startswith("| group | kind | hooks |") and joint[2].startswith("| layer 0 [v] | linear |")
    assert layer_labels(rows) == {0: "0\nlinear", 1: "1\nfull", 2: "2"}
    assert layer_labels(rows, sep=" ")[0] == "0 linear"


def test_end_of_training_table_names_the_kind():
    metrics = {"fvu": 0.25, "explained_variance": 0.75, "l0": 4.0, "dead_fraction": 0.0}
    table = format_table({"layers.0.linear_attn__v": {**metrics, "layer_kind": "linear"},
                          "layers.1__v": {**metrics, "layer_kind": "full"}, "layers.2__v": metrics}).splitlines()
    assert table[0].split()[:3] == ["SAE", "kind", "FVU"]
    assert [line.split()[:2] for line in table[2:]] == [["layers.0.linear_attn__v", "linear"],
                                                       ["layers.1__v", "full"], ["layers.2__v", "-"]]
