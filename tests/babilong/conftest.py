import random

import pytest


@pytest.fixture(scope="session")
def bpe_tokenizer_file(tmp_path_factory):
    """A small byte-level BPE (GPT-2 style) trained in a second on generated text; a tokenizer.json."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from rmt.babilong.background import FallbackText
    from rmt.babilong.worlds import simulate

    rng = random.Random(0)
    fallback = FallbackText()
    text = [fallback.sentence(rng) for _ in range(2000)]
    text += [" ".join(simulate(t, rng).facts) for t in ("qa1", "qa2", "qa5") for _ in range(100)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path
