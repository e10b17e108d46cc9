"""SFT examples and batches: padding, reply masks, deterministic per-step order, per-process rows, languages."""
import dataclasses
import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from qwen_sae_jax.errors import UserError
from qwen_sae_jax.posttrain.config import SFTDataConfig
from qwen_sae_jax.posttrain.data import DataPosition, build_dataset


@pytest.fixture(scope="module")
def tok(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


def test_examples_are_padded_conversations(tok, chat_file):
    data = build_dataset(tok, SFTDataConfig(files=[chat_file], max_len=96), pad_id=0, languages=["en", "zh"])
    assert data.ids.shape == (24, 96) and data.ids.dtype == np.int32
    assert not (data.reply & (data.mask == 0)).any()           # padding is never a reply token
    assert (data.ids[data.mask == 0] == 0).all()
    assert data.language.tolist() == [0, 1] * 12               # detected from the reply script


def test_batches_are_a_function_of_the_step(tok, chat_file):
    data = build_dataset(tok, SFTDataConfig(files=[chat_file], max_len=64, seed=3), pad_id=0)
    B, N = 5, len(data)
    first_epoch = np.concatenate([data.indices(s, B) for s in range(N // B)])
    assert len(set(first_epoch.tolist())) == len(first_epoch)          # no repeats inside an epoch
    assert sorted(np.concatenate([data.indices(s, B) for s in range(N)]).tolist()) == \
        sorted(list(range(N)) * B)                                       # N steps of B rows = B epochs
    again = build_dataset(tok, SFTDataConfig(files=[chat_file], max_len=64, seed=3), pad_id=0)
    np.testing.assert_array_equal(again.batch(7, B)["ids"], data.batch(7, B)["ids"])
    rows = data.batch(7, B, range(2, 4))                                 # one process's rows
    np.testing.assert_array_equal(rows["ids"], data.batch(7, B)["ids"][2:4])
    other = build_dataset(tok, SFTDataConfig(files=[chat_file], max_len=64, seed=4), pad_id=0)
    assert other.indices(0, B).tolist() != data.indices(0, B).tolist()


def test_language_column_and_its_errors(tok, chat_file, tmp_path):
    cfg = SFTDataConfig(files=[chat_file], max_len=64, language_column="lang")
    assert build_dataset(tok, cfg, 0, ["zh", "en"]).language.tolist() == [1, 0] * 12
    with pytest.raises(UserError, match=r"reply language\(s\) en, zh are not in the features file's languages"):
        build_dataset(tok, cfg, 0, ["fr", "de"])


def test_no_reply_tokens_is_one_error(tok, tmp_path):
    path = tmp_path / "users.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "only a question"}]}) + "\n")
    with pytest.raises(UserError, match="no reply tokens after templating"):
        build_dataset(tok, SFTDataConfig(files=[str(path)], max_len=64), 0)
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"messages": [{"role": "user", "content": "x" * 200},
                                             {"role": "assistant", "content": "y"}]}) + "\n")
    with pytest.raises(UserError, match="max_len=32"):
        build_dataset(tok, SFTDataConfig(files=[str(long)], max_len=32), 0)


def test_config_errors():
    with pytest.raises(UserError, match="data.chat must be true"):
        SFTDataConfig(chat=False)
    with pytest.raises(UserError, match="data.max_len must be >= 2"):
        dataclasses.replace(SFTDataConfig(), max_len=1)


def test_data_position_refuses_other_data():
    pos = DataPosition(10, step=4)
    DataPosition(10).set_state(pos.get_state())
    with pytest.raises(UserError, match="trained on 10 conversations, the data now has 11"):
        DataPosition(11).set_state(pos.get_state())
