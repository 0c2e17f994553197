"""A tiny Llama model directory that real vLLM can serve without downloading anything.

``ensure_tiny_model`` writes ``config.json`` (``LlamaForCausalLM``), a byte-level
BPE tokenizer trained here on a few built-in lines of text (``tokenizer.json``),
``tokenizer_config.json`` (``PreTrainedTokenizerFast`` with bos/eos and a
``chat_template``) and ``generation_config.json``. There are no weights: vLLM
runs it with ``load_format="dummy"`` (random weights), so the text it generates
is gibberish, but the serving path (tokenize, schedule, prefill, decode, stream,
detokenize, OpenAI API) is the real one and step times scale with the shape.

The directory name encodes the shape (``llama-L{layers}-H{hidden}-...``) so the
CPU stand-ins of different pools (e.g. 2 layers for "H100", 4 for "A100") live
side by side. Writing is idempotent and atomic: files go to a temporary
directory next to the target, which is then renamed into place; a directory that
already exists is reused as is (its files are a pure function of the shape), so
concurrent replicas on one host race safely.

The tokenizer is trained with the ``tokenizers`` library only (no Ray, no vLLM),
deterministically: the same text and trainer settings give the same vocabulary.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CACHE_ENV = "CASCADE_MODEL_CACHE"
# Bump when the files written here change, so stale directories are not reused.
FORMAT_VERSION = 1

BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"
SPECIAL_TOKENS = (BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)

# Role-tagged turns; the generation prompt ends with "<|assistant|>\n".
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# Training text of the tokenizer: a few lines of English, code-ish text and
# digits, so common prompts tokenize into a few tokens per word rather than one
# per byte (every byte stays encodable through the byte-level alphabet).
_CORPUS = (
    "The quick brown fox jumps over the lazy dog.",
    "Cascade routes requests to replicas and watches the variance of their latency.",
    "A request waits in the queue, is prefilled, then decodes one token per step.",
    "Time to first token, inter-token latency and end-to-end latency are measured in seconds.",
    "The KV cache holds the keys and values of every token that is still running.",
    "When the cache is full the scheduler preempts a sequence and recomputes it later.",
    "Hello! How are you today? I am fine, thank you. What can I do for you?",
    "Please write a short story about a robot who learns to paint the sea.",
    "Explain why the sky is blue in one sentence, then give an example.",
    "user: What is the capital of France? assistant: The capital of France is Paris.",
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
    "for i in range(10): total += i * i  # squares",
    '{"model": "cascade-tiny", "prompt": "Hello", "max_tokens": 16, "stream": true}',
    "0 1 2 3 4 5 6 7 8 9 10 11 12 16 32 64 128 256 512 1024 2048 4096",
    "Ray Serve deploys replicas of a model on a cluster of GPU nodes, A100 and H100.",
    "The optimizer splits traffic between pools so that the tail latency stays low.",
)
# Requested BPE vocabulary; the corpus is small, so the trainer may stop earlier.
_TARGET_VOCAB = 1024


@dataclass(frozen=True)
class TinyLlamaShape:
    """The architecture knobs of the tiny model (``config.json``)."""

    num_layers: int = 2
    hidden_size: int = 256
    num_heads: int = 4
    num_kv_heads: int = 4
    intermediate_size: int = 512
    max_position_embeddings: int = 4096

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"tiny model: {name} must be a positive int, got {value!r}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"tiny model: hidden_size {self.hidden_size} is not a multiple of "
                f"num_heads {self.num_heads}"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"tiny model: num_heads {self.num_heads} is not a multiple of "
                f"num_kv_heads {self.num_kv_heads}"
            )

    @property
    def dir_name(self) -> str:
        return (
            f"llama-L{self.num_layers}-H{self.hidden_size}-A{self.num_heads}"
            f"-KV{self.num_kv_heads}-I{self.intermediate_size}"
            f"-P{self.max_position_embeddings}-v{FORMAT_VERSION}"
        )


def default_cache_dir() -> Path:
    """``$CASCADE_MODEL_CACHE`` if set, else ``~/.cache/cascade/models``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cascade" / "models"


def ensure_tiny_model(
    num_layers: int = 2,
    hidden_size: int = 256,
    *,
    num_heads: int = 4,
    num_kv_heads: int = 4,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
    cache_dir: Path | None = None,
) -> Path:
    """The directory of a tiny Llama of this shape, written if it is missing.

    ``intermediate_size`` defaults to ``2 * hidden_size``. The vocabulary size in
    ``config.json`` is the generated tokenizer's, so every id the model can emit
    decodes to text. Raises ``ValueError`` for an impossible shape and
    ``OSError`` if the cache directory cannot be written.
    """
    shape = TinyLlamaShape(
        num_layers=num_layers,
        hidden_size=hidden_size,
        num_heads=num_heads,
        num_kv_heads=num_kv_heads,
        intermediate_size=intermediate_size if intermediate_size is not None else 2 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / shape.dir_name
    if _is_complete(target):
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shape.dir_name}.", dir=root))
    try:
        _write_model(tmp, shape)
        try:
            tmp.rename(target)
        except OSError:
            # Another process renamed its copy first (the target now exists and is
            # non-empty), or a stale incomplete directory is in the way.
            if not _is_complete(target):
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json")


def _is_complete(path: Path) -> bool:
    return all((path / name).is_file() for name in _FILES)


def build_tokenizer() -> Any:
    """Train the byte-level BPE tokenizer (a ``tokenizers.Tokenizer``).

    ``<s>`` is prepended to every encoded text (like Llama's tokenizer), the
    decoder undoes the byte-level mapping, so ``decode(encode(text))`` gives
    ``text`` back for any UTF-8 string.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_TARGET_VOCAB,
        min_frequency=1,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    bos_id = tok.token_to_id(BOS_TOKEN)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A {BOS_TOKEN} $B",
        special_tokens=[(BOS_TOKEN, bos_id)],
    )
    return tok


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _write_model(out: Path, shape: TinyLlamaShape) -> None:
    tok = build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    vocab_size = int(tok.get_vocab_size())
    bos_id = int(tok.token_to_id(BOS_TOKEN))
    eos_id = int(tok.token_to_id(EOS_TOKEN))
    pad_id = int(tok.token_to_id(PAD_TOKEN))
    _write_json(
        out / "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": vocab_size,
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers,
            "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.num_kv_heads,
            "head_dim": shape.hidden_size // shape.num_heads,
            "hidden_act": "silu",
            "max_position_embeddings": shape.max_position_embeddings,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "attention_bias": False,
            "mlp_bias": False,
            "tie_word_embeddings": False,
            "initializer_range": 0.02,
            "bos_token_id": bos_id,
            "eos_token_id": eos_id,
            "pad_token_id": pad_id,
            "torch_dtype": "float32",
            "use_cache": True,
        },
    )
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": None,
            "add_bos_token": True,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": shape.max_position_embeddings,
            "chat_template": CHAT_TEMPLATE,
        },
    )
    _write_json(
        out / "special_tokens_map.json",
        {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN},
    )
    _write_json(
        out / "generation_config.json",
        {"bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id},
    )
