"""InputIBA for text classifiers: data, sentiment models, the explainer.

Example:
    >>> from inputiba.text import load_text_model, explain_texts
    >>> tm = load_text_model("lstm")            # trains on first use (about a minute, CPU)  # doctest: +SKIP
    >>> [r.tokens for r in explain_texts(["A gorgeous, witty film."], tm)]  # doctest: +SKIP
"""

from .data import (
    Vocabulary,
    movie_snippets,
    packaged_glove,
    pad_sequences,
    read_glove_text,
    read_imdb,
    snippet_split,
    tokenize,
    vader_lexicon,
)
from .explain import (
    TEXT_DEFAULTS,
    SequenceCritic,
    TextInputIBA,
    TextInputIBAResult,
    TokenAttribution,
    estimate_token_statistics,
    explain_texts,
    layer_gradient,
    text_config,
)
from .models import (
    LSTMSentimentClassifier,
    MiniLMSentimentClassifier,
    TextModel,
    load_text_model,
)

__all__ = [
    "Vocabulary",
    "movie_snippets",
    "packaged_glove",
    "pad_sequences",
    "read_glove_text",
    "read_imdb",
    "snippet_split",
    "tokenize",
    "vader_lexicon",
    "TEXT_DEFAULTS",
    "SequenceCritic",
    "TextInputIBA",
    "TextInputIBAResult",
    "TokenAttribution",
    "estimate_token_statistics",
    "explain_texts",
    "layer_gradient",
    "text_config",
    "LSTMSentimentClassifier",
    "MiniLMSentimentClassifier",
    "TextModel",
    "load_text_model",
]
