"""Write a tiny Hugging Face llama checkpoint (safetensors) with a real sentencepiece tokenizer.

Run with a Python that has torch, transformers and sentencepiece: hubbot's converter venv has all
three, so the tests run this script there (``<venv>/bin/python tests/make_tiny_hf.py OUT --text F``).
hubbot's own environment has none of them and must not get them.

The tokenizer is trained on ``--text`` (real prose) with byte fallback, so every string tokenizes,
and the GGUF made from the checkpoint can be checked token by token against sentencepiece itself.
Weights are random (seeded): the model generates gibberish, which is all the tests need.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path


def train_tokenizer(text: Path, folder: Path, vocab_size: int) -> Path:
    """A llama-style BPE sentencepiece model (unk/bos/eos = 0/1/2, byte fallback)."""
    import sentencepiece as spm

    prefix = folder / "tokenizer"
    spm.SentencePieceTrainer.train(
        input=str(text), model_prefix=str(prefix), vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    return prefix.with_suffix(".model")


def write_tokenizer_files(out: Path, sp_model: Path, broken: bool) -> None:
    """tokenizer.json/tokenizer_config.json via transformers, plus tokenizer.model copied by hand.

    transformers 5's ``save_pretrained`` does not write ``tokenizer.model`` for sentencepiece
    tokenizers, so it is copied explicitly. ``broken=True`` writes what a naive transformers 5
    script produces instead (``LlamaTokenizer(vocab_file=...)``: a 3-token tokenizer.json and no
    tokenizer.model), from which llama.cpp's converter silently writes a 3-token vocabulary.
    """
    from transformers import LlamaTokenizer

    if broken:
        LlamaTokenizer(vocab_file=str(sp_model)).save_pretrained(str(out))
        (out / "tokenizer.model").unlink(missing_ok=True)
        return
    # Loading from a folder (not vocab_file=) makes transformers 5 convert the whole vocabulary.
    staging = sp_model.parent / "staging"
    staging.mkdir(exist_ok=True)
    shutil.copyfile(sp_model, staging / "tokenizer.model")
    tok = LlamaTokenizer.from_pretrained(str(staging), add_bos_token=True, add_eos_token=False)
    if len(tok) != _sp_size(sp_model):
        raise SystemExit(f"transformers loaded {len(tok)} tokens from a {_sp_size(sp_model)}-token model")
    tok.save_pretrained(str(out))
    shutil.copyfile(sp_model, out / "tokenizer.model")


def _sp_size(sp_model: Path) -> int:
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=str(sp_model)).vocab_size()


def write_model(out: Path, vocab_size: int, layers: int, hidden: int, seed: int, shard: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-5,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    # Real checkpoints are rarely as small as one file: shard it so the index path is exercised.
    model.save_pretrained(str(out), max_shard_size=shard)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--text", type=Path, required=True, help="prose to train the tokenizer on")
    ap.add_argument("--vocab-size", type=int, default=640)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard", default="400KB", help="max shard size passed to save_pretrained")
    ap.add_argument("--broken-tokenizer", action="store_true",
                    help="write the incomplete tokenizer files of the transformers 5 trap")
    args = ap.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        sp_model = train_tokenizer(args.text, Path(tmp), args.vocab_size)
        write_tokenizer_files(args.out, sp_model, broken=args.broken_tokenizer)
    write_model(args.out, args.vocab_size, args.layers, args.hidden, args.seed, args.shard)
    files = sorted(p.name for p in args.out.iterdir())
    print(json.dumps({"out": str(args.out), "files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
