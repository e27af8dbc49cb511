"""Load language models as hooked ``TransformerBridge`` objects.

Usage::

    from recircuit.models import load_model, tiny_model
    model = load_model("smollm2-135m-instruct")     # offline, from the pinned GGUF asset
    model = load_model("Qwen/Qwen2.5-0.5B")          # any TL-supported HF name (hub or cache)
    model = load_model("/path/to/hf_dir")            # a local HF directory
    model = load_model("/path/to/model.gguf")        # any GGUF transformers reads; architecture from the file
    convert_gguf("/path/to/model.gguf", "out_dir")   # ... written as a plain HF directory (safetensors)
    test_model = tiny_model(seed=0)                  # 2-layer GQA Llama for tests, instant
    gpt2_like = load_model("tiny-gpt2")              # tiny random models of every family in
                                                     # recircuit.models.families.FAMILIES, offline

Every model comes back with the per-head hooks that circuits need switched on:
``blocks.L.attn.hook_result`` ``[b, p, n_heads, d_model]``, ``blocks.L.hook_{q,k,v}_input``
(k/v per KV head under grouped-query attention) and ``blocks.L.hook_mlp_in``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.model_bridge.generalized_components.normalization import NormalizationBridge
from transformer_lens.model_bridge.generalized_components.rms_normalization import (
    RMSNormalizationBridge,
)

from recircuit._io import temp_prefix
from recircuit.errors import InputError
from recircuit.models.families import FAMILIES, family_of

logger = logging.getLogger(__name__)

#: Short names for models recircuit can load without the HF hub.
OFFLINE_MODELS: dict[str, dict[str, str]] = {
    "smollm2-135m-instruct": {
        "asset": "smollm2-135m-instruct",
        "hf_name": "HuggingFaceTB/SmolLM2-135M-Instruct",
    },
}

#: The name the tiny Llama-style (GQA) test model carries; other families' tiny models carry
#: ``recircuit/tiny-<family>``.
TINY_MODEL_NAME = "recircuit/tiny-llama-gqa"

#: ``load_model`` names of the tiny random models -> their family (a row of ``FAMILIES``).
TINY_MODELS: dict[str, str] = {"tiny": "llama", **{f"tiny-{name}": name for name in FAMILIES}}


class ModelLoadError(InputError):
    """A model name or path could not be turned into a bridge (an :class:`InputError`: one line, with the fix)."""


def tiny_family(name: str) -> str | None:
    """The family of a tiny model name (``"tiny"``, ``"tiny-gpt2"``, ``"recircuit/tiny-gpt2"``), else ``None``."""
    key = name.lower()
    if key == TINY_MODEL_NAME:
        return "llama"
    key = key.removeprefix("recircuit/")
    return TINY_MODELS.get(key)


def tiny_model_name(family: str) -> str:
    """The name a tiny model of ``family`` carries (``model_name`` of it; ``load_model`` accepts it)."""
    return TINY_MODEL_NAME if family == "llama" else f"recircuit/tiny-{family}"


def supported_names() -> list[str]:
    """Every name ``load_model`` resolves without the hub: offline assets and tiny models."""
    return sorted(OFFLINE_MODELS) + list(TINY_MODELS)


def _offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


#: Proxy variables: with one set, a direct socket to the hub says nothing about reachability.
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub may answer: a TCP connection to it opens within ``timeout`` seconds.

    Behind a proxy (any of :data:`PROXY_VARS` set) the direct connection is expected to fail
    while the hub is reachable through the proxy, so this answers True and lets the hub client
    (which honours the proxy) try.
    """
    if any(os.environ.get(v, "").strip() for v in PROXY_VARS):
        return True
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 - a malformed repo id is simply not cached
        return False
    return isinstance(hit, str)


def _unknown_model(name: str, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"unknown model {name!r}: {why}",
        field="model",
        fix=f"use one of the offline models {supported_names()}, a local Hugging Face directory "
            "(--model /path/to/dir, made by save_pretrained, holding config.json), or a hub name "
            "TransformerLens supports while the hub (or its cache, HF_HOME) is reachable",
    )


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def enable_circuit_hooks(model: TransformerBridge) -> TransformerBridge:
    """Switch on per-head attention results, split q/k/v inputs and ``hook_mlp_in``."""
    model.set_use_attn_result(True)
    model.set_use_split_qkv_input(True)
    model.set_use_hook_mlp_in(True)
    return model


@contextmanager
def plain_forward(model: TransformerBridge) -> Iterator[TransformerBridge]:
    """Temporarily switch the per-head hooks off, for forward passes that need no circuits.

    With them off the bridge computes exactly what HF computes (bit-identical logits) and skips
    materialising per-head results ``[batch, pos, n_heads, d_model]``, which makes scoring faster.
    The previous settings are restored on exit.
    """
    cfg = model.cfg
    before = (cfg.use_attn_result, cfg.use_split_qkv_input, cfg.use_hook_mlp_in)
    model.set_use_attn_result(False)
    model.set_use_split_qkv_input(False)
    model.set_use_hook_mlp_in(False)
    try:
        yield model
    finally:
        model.set_use_attn_result(before[0])
        model.set_use_split_qkv_input(before[1])
        model.set_use_hook_mlp_in(before[2])


def _boot(hf_name: str, hf_model, tokenizer, device: torch.device, dtype: torch.dtype) -> TransformerBridge:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    hf_model.eval()
    bridge = TransformerBridge.boot_transformers(
        hf_name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
    )
    bridge.eval()
    return skip_unhooked_norm_stats(enable_circuit_hooks(bridge))


class _NativeNormShortcut:
    """A native-path norm bridge that computes its hook values only when a hook will read them.

    TransformerLens 4.3's native norm path (``use_native_layernorm_autograd``) first computes the
    normalization's scale and normalized input under ``no_grad`` to feed ``hook_scale`` and
    ``hook_normalized``, then returns the HF norm module's own output whenever no hook edited
    them. With no hook on either, that first computation (seven elementwise passes over the
    residual per norm, 61 norms per SmolLM2 forward) is thrown away. This subclass returns the HF
    module's output directly in that case, which is the very tensor the library's path returns,
    and defers to the library as soon as either hook point has a forward or backward hook.
    """

    def _hf_autograd_forward_with_hooks(self, x: torch.Tensor) -> torch.Tensor:
        if (isinstance(self.original_component, torch.nn.Identity) or self.hook_scale.fwd_hooks
                or self.hook_normalized.fwd_hooks or self.hook_scale.bwd_hooks or self.hook_normalized.bwd_hooks):
            return super()._hf_autograd_forward_with_hooks(x)
        result = self.original_component(x)
        return result if result.dtype == x.dtype else result.to(x.dtype)


class NativeNormBridge(_NativeNormShortcut, NormalizationBridge):
    """TransformerLens' ``NormalizationBridge`` with :class:`_NativeNormShortcut`."""


class NativeRMSNormBridge(_NativeNormShortcut, RMSNormalizationBridge):
    """TransformerLens' ``RMSNormalizationBridge`` with :class:`_NativeNormShortcut`."""


def _shortcut_classes() -> dict[type, type]:
    return {NormalizationBridge: NativeNormBridge, RMSNormalizationBridge: NativeRMSNormBridge}


def skip_unhooked_norm_stats(model: TransformerBridge) -> TransformerBridge:
    """Give every native-path norm of ``model`` the :class:`_NativeNormShortcut` (in place; returns ``model``).

    Outputs are bit-identical (tested per family); norms on the python path (GPT-2's) and norm
    classes other than TransformerLens' two generic ones are left as they are.
    """
    fast = _shortcut_classes()
    for m in model.modules():
        if type(m) in fast and getattr(m, "use_native_layernorm_autograd", False):
            m.__class__ = fast[type(m)]
    return model


# --- GGUF files: any architecture transformers reads from GGUF -----------------------------------
# load_model("/path/model.gguf") and convert_gguf(src, out_dir). transformers reads the architecture,
# hyperparameters and tokenizer (including whether it adds a BOS) from the file and dequantizes the
# weights; the bridge then boots as for the default model (itself a GGUF asset). A file that is not
# GGUF, or whose architecture transformers cannot read, raises ModelLoadError with the fix.

#: The four bytes every GGUF file starts with.
GGUF_MAGIC = b"GGUF"

_FIX = ("convert the original model with llama.cpp's convert_hf_to_gguf.py to an architecture transformers reads, "
        "or pass its Hugging Face directory (one holding config.json) instead")


def is_gguf_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file that starts with the GGUF magic bytes."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == GGUF_MAGIC


def find_gguf(path: str | os.PathLike) -> Path | None:
    """The GGUF file ``path`` names, or ``None`` when it names none.

    ``path`` names a GGUF file when it is a file ending in ``.gguf`` (whatever its bytes: a bad one
    is reported when loading), a file starting with the GGUF magic, or a directory without
    ``config.json`` holding exactly one ``*.gguf`` file.

    Raises:
        ModelLoadError: a directory without ``config.json`` holds several ``.gguf`` files.
    """
    p = Path(path).expanduser()
    if p.is_file():
        return p if p.suffix.lower() == ".gguf" or is_gguf_file(p) else None
    if p.is_dir() and not (p / "config.json").exists():
        found = sorted(q for q in p.glob("*.gguf") if q.is_file())
        if len(found) > 1:
            raise ModelLoadError(f"holds {len(found)} GGUF files ({', '.join(q.name for q in found[:5])}) and no "
                                 "config.json, so which model to load is ambiguous", path=p,
                                 fix="pass the path of one .gguf file")
        return found[0] if found else None
    return None


def supported_gguf_architectures() -> list[str]:
    """The GGUF architectures (``general.architecture``) the installed transformers can load."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return sorted(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer"))


def gguf_architecture(path: str | os.PathLike) -> str:
    """The ``general.architecture`` a GGUF file declares.

    Raises:
        ModelLoadError: the file is not GGUF (wrong magic bytes) or its header cannot be read.
    """
    p = Path(path)
    if not is_gguf_file(p):
        raise ModelLoadError("is not a GGUF file (it does not start with the bytes 'GGUF')", path=p,
                             fix="pass a .gguf file written by llama.cpp, or a Hugging Face model directory")
    try:
        from gguf import GGUFReader

        field = GGUFReader(str(p)).fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    except Exception as err:  # noqa: BLE001 - any failure to parse the header means a broken file
        raise ModelLoadError(f"is not a readable GGUF file: {_short(err)}", path=p,
                             fix="download or write the file again (it may be truncated), or " + _FIX) from err


def _short(err: BaseException, limit: int = 200) -> str:
    text = " ".join(f"{type(err).__name__}: {err}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_gguf(path: str | os.PathLike, dtype: torch.dtype = torch.float32, hf_name: str | None = None):
    """Load the HF ``(model, tokenizer, hf_name)`` in a GGUF file, dequantized to ``dtype``.

    Args:
        path: the ``.gguf`` file.
        dtype: weight dtype after dequantizing.
        hf_name: the architecture label handed to TransformerLens; default: the file's path.

    Raises:
        ModelLoadError: not a GGUF file, or transformers cannot read it (the message names the
            file, the architecture it declares and what transformers said, and says what to do).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    p = Path(path).expanduser()
    arch = gguf_architecture(p)
    try:
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
        hf = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=dtype,
                                                  attn_implementation="eager")
    except Exception as err:  # noqa: BLE001 - whatever transformers raises, the file is unusable as is
        known = supported_gguf_architectures()
        why = (f"its architecture {arch!r} is not one transformers reads from GGUF ({', '.join(known)})"
               if arch not in known else f"transformers cannot load it (architecture {arch!r})")
        raise ModelLoadError(f"{why}: {_short(err)}", path=p, fix=_FIX) from err
    logger.info("loaded GGUF %s (architecture %s)", p, arch)
    return hf, tok, hf_name or str(p)


def convert_gguf(src: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Write the model in a GGUF file as a plain Hugging Face directory (config, safetensors, tokenizer).

    The weights are dequantized to ``dtype`` (float32 by default), so ``load_model(out_dir)`` gives
    the logits ``load_model(src)`` gives, without dequantizing again. The directory is written
    beside ``out_dir`` under a temporary name and renamed into place when complete, so a failed
    or interrupted conversion leaves no half-written model.

    Args:
        src: the ``.gguf`` file (or a directory holding exactly one).
        out_dir: the directory to create.
        overwrite: replace ``out_dir`` when it exists and is not empty.
        dtype: weight dtype of the written model.

    Returns:
        ``out_dir``.

    Raises:
        InputError: ``src`` is no readable GGUF file, or ``out_dir`` is a file or a non-empty
            directory and ``overwrite`` is False.
    """
    src_path = Path(src).expanduser()
    out = Path(out_dir).expanduser()
    gguf = find_gguf(src_path)
    if gguf is None:
        raise ModelLoadError("is not a GGUF file" if src_path.exists() else "does not exist", path=src_path,
                             fix="pass the path of a .gguf file")
    if out.exists() and not out.is_dir():
        raise InputError("exists and is a file, not a directory", path=out, fix="choose a directory path for the output")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError("exists and is not empty", path=out,
                         fix="choose a new or empty directory, or pass --overwrite (overwrite=True) to replace it")
    hf, tok, _ = load_gguf(gguf, dtype=dtype)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are
    # already dequantized, so dropping the marks saves them as plain tensors
    hf.hf_quantizer = None
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
    old: Path | None = None
    try:
        hf.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if out.exists():  # empty, or overwrite: move it aside first (os.replace needs the target gone)
            old = Path(tempfile.mkdtemp(prefix=temp_prefix(out.name), suffix=".tmp", dir=out.parent))
            os.replace(out, old / "previous")
        try:
            os.replace(tmp, out)
        except BaseException:
            if old is not None:  # put the previous directory back
                os.replace(old / "previous", out)
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("converted %s -> %s", gguf, out)
    return out


def load_hf(name_or_path: str, dtype: torch.dtype = torch.float32):
    """Load the plain HF ``(model, tokenizer)`` pair behind ``name_or_path`` (no bridge).

    Args:
        name_or_path: an entry of :data:`OFFLINE_MODELS`, an HF hub name, a local HF directory or
            a GGUF file (:func:`load_gguf`: the architecture comes from the file).
        dtype: weight dtype.

    Returns:
        ``(hf_model, tokenizer, hf_name)``; ``hf_name`` is the architecture label for TL.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    key = str(name_or_path).lower()
    if key in OFFLINE_MODELS:
        from recircuit.assets import fetch_asset

        spec = OFFLINE_MODELS[key]
        return load_gguf(fetch_asset(spec["asset"]), dtype=dtype, hf_name=spec["hf_name"])
    path = Path(name_or_path).expanduser()
    gguf = find_gguf(path)
    if gguf is not None:
        return load_gguf(gguf, dtype=dtype)
    if path.exists() and not (path / "config.json").exists():
        raise ModelLoadError(
            "exists but is neither a Hugging Face model directory (no config.json) nor a GGUF file",
            path=path,
            fix=f"point --model at a directory made by save_pretrained, a .gguf file (or convert one with "
                f"recircuit models convert FILE.gguf OUT_DIR), or use one of {supported_names()}",
        )
    if not path.exists() and not _hub_cached(name_or_path):
        # Fail fast instead of a minute of hub retries: nothing cached, and no hub to ask.
        if _offline():
            raise _unknown_model(name_or_path, "it is not a local directory, not in the Hugging Face cache, and "
                                               "HF_HUB_OFFLINE is set")
        if not _hub_reachable():
            raise _unknown_model(name_or_path, "it is not a local directory, not in the Hugging Face cache, and "
                                               "the hub is unreachable")
    try:
        tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else name_or_path)
        hf = AutoModelForCausalLM.from_pretrained(
            str(path) if path.exists() else name_or_path, dtype=dtype, attn_implementation="eager"
        )
    except (OSError, ValueError) as err:
        raise _unknown_model(name_or_path, " ".join(str(err).split())[:300]) from err
    hf_name = getattr(hf.config, "_name_or_path", None) or name_or_path
    return hf, tok, hf_name


def load_model(
    name_or_path: str = "smollm2-135m-instruct",
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> TransformerBridge:
    """Load a causal LM as a ``TransformerBridge`` with per-head circuit hooks on.

    Args:
        name_or_path: ``"smollm2-135m-instruct"`` (offline GGUF asset), an HF hub name that
            TransformerLens supports, a local HF model directory, a ``.gguf`` file (or a directory
            holding exactly one and no ``config.json``), ``"tiny"`` (the random
            Llama-style test model of :func:`tiny_model`, for fast dry runs) or
            ``"tiny-<family>"`` for a random model of another family (:data:`TINY_MODELS`).
        device: torch device; defaults to CUDA when available.
        dtype: weight dtype (float32 by default; use bfloat16 on GPU for speed).

    Returns:
        A bridge in eval mode whose logits equal the HF model's.

    Raises:
        ModelLoadError: the name is unknown (offline: at once, naming the supported names), the
            hub is unreachable, the path is not a model, or TransformerLens has no bridge with
            per-head hooks for it.
    """
    device = torch.device(device) if device is not None else default_device()
    family = tiny_family(name_or_path)
    if family is not None:
        return tiny_model(device=device, family=family)
    hf, tok, hf_name = load_hf(name_or_path, dtype=dtype)
    try:
        bridge = _boot(hf_name, hf, tok, device, dtype)
    except (ValueError, KeyError, NotImplementedError) as err:
        raise ModelLoadError(
            f"TransformerLens has no bridge with per-head hooks for {name_or_path!r}: "
            f"{' '.join(str(err).split())[:300]}",
            field="model",
            fix=f"pick a family recircuit supports ({', '.join(sorted(FAMILIES))}, or Qwen2/Mistral-style "
                "models TransformerLens 4.x bridges with per-head hooks)",
        ) from err
    try:
        family_of(bridge)
    except InputError as err:  # scoring still works; circuits, unlearning and LoRA will refuse it
        logger.warning("%s", err)
    bridge.recircuit_name = name_or_path  # type: ignore[attr-defined]
    logger.info("loaded %s on %s", name_or_path, device)
    return bridge


def tiny_tokenizer():
    """A small deterministic byte-level BPE tokenizer for tests, trained in milliseconds.

    ``" Yes"`` and ``" No"`` are single tokens, as they are for SmolLM2.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from recircuit.data.prompts import INSTRUCTION, PROMPT_TEMPLATE

    corpus = [
        PROMPT_TEMPLATE.format(instruction=INSTRUCTION, input="User Preference: \"Movie (1995)\"")
        + " Yes. No."
    ] * 4
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384,
        special_tokens=["<pad>", "<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([" Yes", " No"])
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>"
    )
    hf_tok.padding_side = "left"
    return hf_tok


def _tiny_kv(family: str, n_heads: int, n_kv_heads: int | None) -> int:
    fam = FAMILIES[family]
    if n_kv_heads is None:
        return n_heads // 2 if fam.gqa and n_heads % 2 == 0 else n_heads
    if n_kv_heads != n_heads and not fam.gqa:
        raise InputError(f"family {family!r} has no grouped-query attention, so n_kv_heads must equal n_heads "
                         f"({n_heads}), not {n_kv_heads}", field="n_kv_heads", fix="leave n_kv_heads unset")
    return n_kv_heads


def tiny_hf_model(seed: int = 0, n_layers: int = 2, n_heads: int = 4, n_kv_heads: int | None = None,
                  d_model: int = 64, family: str = "llama"):
    """A tiny random HF model of ``family`` and its tokenizer, for tests (built offline, instantly).

    Args:
        seed: weight-initialisation seed.
        n_layers, n_heads, d_model: architecture.
        n_kv_heads: KV heads; default ``n_heads // 2`` for families with grouped-query attention
            (Llama: the 4-query / 2-KV model), ``n_heads`` otherwise.
        family: a row of :data:`recircuit.models.families.FAMILIES`.

    Returns:
        ``(hf_model, tokenizer)``.
    """
    from transformers import AutoModelForCausalLM

    if family not in FAMILIES or FAMILIES[family].tiny_config is None:
        raise InputError(f"no tiny model for family {family!r}", field="family", fix=f"choose from {sorted(FAMILIES)}")
    tok = tiny_tokenizer()
    cfg = FAMILIES[family].tiny_config(len(tok), n_layers, n_heads, _tiny_kv(family, n_heads, n_kv_heads), d_model,
                                       tok.pad_token_id, tok.eos_token_id)
    cfg._attn_implementation = "eager"
    gen = torch.random.fork_rng()
    with gen:
        torch.manual_seed(seed)
        hf = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    return hf, tok


def tiny_model(
    seed: int = 0,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 64,
    device: str | torch.device | None = "cpu",
    family: str = "llama",
) -> TransformerBridge:
    """A tiny random bridge for tests: by default a GQA Llama (2 layers, 4 query heads, 2 KV heads).

    Args:
        seed: weight-initialisation seed; the same seed gives identical weights.
        n_layers, n_heads, n_kv_heads, d_model: architecture (see :func:`tiny_hf_model`).
        device: torch device (CPU by default, for tests).
        family: ``"llama"``, ``"gpt2"`` (fused qkv, plain MLP, learned positions, LayerNorm),
            ``"neox"`` (interleaved fused qkv, parallel attention and MLP), ``"phi3"`` (fused qkv
            and fused gate/up, GQA), ``"gemma2"``/``"gemma3"`` (post-block "sandwich" norms, GQA;
            Gemma-2 with logit soft-capping); any row of :data:`recircuit.models.families.FAMILIES`.
    """
    hf, tok = tiny_hf_model(seed, n_layers, n_heads, n_kv_heads, d_model, family=family)
    bridge = _boot(FAMILIES[family].tl_label, hf, tok, torch.device(device or "cpu"), torch.float32)
    bridge.recircuit_name = tiny_model_name(family)  # type: ignore[attr-defined]
    bridge.recircuit_seed = seed  # type: ignore[attr-defined]
    return bridge


def copy_model(model: TransformerBridge) -> TransformerBridge:
    """A deep copy of a bridge whose hooks are its own (use it instead of ``copy.deepcopy``).

    TransformerLens 4.3 wires ``blocks.L.hook_mlp_in`` (and the pre-norm residual capture of the
    split q/k/v inputs) as forward pre-hooks on the block's norms, on the first forward pass,
    with closures over that block. ``copy.deepcopy`` keeps those closures, so a copy of a bridge
    that has run a forward pass calls the *original's* ``hook_mlp_in``: hooks added to the copy's
    ``hook_mlp_in`` never fire, and hooks on the original's fire while the copy runs. This copies
    and then rewires every block of the copy to itself.
    """
    import copy

    clone = copy.deepcopy(model)
    for block in getattr(clone, "blocks", []):
        if hasattr(block, "_teardown_capture_hooks") and hasattr(block, "_maybe_wire_capture_hooks"):
            block._teardown_capture_hooks()
            block._maybe_wire_capture_hooks()
    return clone


def model_name(model: TransformerBridge) -> str:
    """The name a bridge was loaded under (used to check checkpoints against base models)."""
    return getattr(model, "recircuit_name", None) or str(model.cfg.model_name)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
