"""minicohere: Cohere's Command-R (and the cohere2 family), built from scratch for a course, in one readable file.

    import minicohere
    model = minicohere.from_pretrained("CohereForAI/c4ai-command-r-v01", device="cuda")
"""

from .model import (
    CohereConfig,
    CohereLayerNorm,
    CohereRotaryEmbedding,
    CohereAttention,
    CohereMLP,
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
from .bpe import ByteLevelBPE, bpe_merge_word, bytes_to_unicode, pretokenize

__version__ = "0.1.0"
