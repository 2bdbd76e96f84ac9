"""minicohere: Cohere's Command-R, built from scratch for a course, in one readable file.

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
    ModelOutput,
    apply_rotary,
    causal_lm_loss,
    causal_mask,
    eager_attention,
    repeat_kv,
    rope_inv_freq,
    rotate_pairs,
    sdpa_attention,
)
from .checkpoint import CheckpointError, from_pretrained, save_pretrained
from .tokenizer import BUILTIN_CHAT_TEMPLATES, Tokenizer, default_tokenizer_path, validate_messages
from .bpe import ByteLevelBPE, bpe_merge_word, bytes_to_unicode, pretokenize

__version__ = "0.1.0"
