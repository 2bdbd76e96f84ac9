"""minicohere: Cohere's Command-R (and the cohere2 family), built from scratch for a course, in one readable file.

    import minicohere
    model = minicohere.from_pretrained("CohereForAI/c4ai-command-r-v01", device="cuda")
"""

import sys as _sys

if _sys.argv[:1] == ["-m"] and ("-mminicohere" in _sys.orig_argv or
                                ["-m", "minicohere"] in map(list, zip(_sys.orig_argv, _sys.orig_argv[1:]))):
    # `python -m minicohere` is starting (argv[0] is "-m" until runpy has found the module): Ctrl-C while
    # torch is imported ends it without a traceback. cli.main() turns Ctrl-C back into KeyboardInterrupt.
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)

from .model import (
    CohereConfig,
    CohereLayerNorm,
    CohereRotaryEmbedding,
    CohereAttention,
    CohereMLP,
    CohereRMSNorm,
    CohereRouter,
    CohereExperts,
    CohereSparseMoeBlock,
    CohereDecoderLayer,
    CohereModel,
    CohereForCausalLM,
    KVCache,
    ModelOutput,
    StaticKVCache,
    TextStreamer,
    apply_rotary,
    apply_temperature,
    causal_lm_loss,
    causal_mask,
    eager_attention,
    generate,
    min_p_filter,
    next_token,
    repeat_kv,
    ring_slot_positions,
    rope_inv_freq,
    rotate_pairs,
    sdpa_attention,
    sliding_window_mask,
    stream,
    top_k_filter,
    top_p_filter,
    warp_logits,
)
from .checkpoint import CheckpointError, from_pretrained, save_pretrained
from .tokenizer import BUILTIN_CHAT_TEMPLATES, Tokenizer, default_tokenizer_path, validate_messages
from .bundled import bundled_path
from .quant import Int4Linear, Int8Linear, NF4Linear, QuantizedLinear, parameter_bytes, quantize
from .grounded import answer
from .bpe import ByteLevelBPE, bpe_merge_word, bytes_to_unicode, pretokenize

__version__ = "0.1.0"
