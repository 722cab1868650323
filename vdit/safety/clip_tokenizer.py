"""CLIP's byte-level BPE tokenizer, as transformers' CLIPTokenizer (tokenizers-backed) runs it, from a
CLIP folder's tokenizer.json (what transformers 5 saves) or vocab.json + merges.txt (older saves).

Text is NFC-normalised, each run of whitespace becomes one space, and it is lowercased; it is then
split into contractions ('s 't 're 've 'm 'll 'd), runs of letters, single digits and runs of other
non-space characters (Unicode categories decide). Each piece's UTF-8 bytes map to printable
characters (GPT-2's table), its last symbol gains "</w>", and adjacent symbols merge by rank. The
ids are wrapped in <|startoftext|> ... <|endoftext|>; those two markers written in the text are the
special tokens, and a symbol missing from the vocabulary is <|endoftext|> (transformers' unknown).
"""
import functools
import json
import os
import re
import unicodedata

from vdit.core.errors import UserError

START, END = "<|startoftext|>", "<|endoftext|>"
SUFFIX = "</w>"
TOKENIZER_FILE, VOCAB_FILE, MERGES_FILE = "tokenizer.json", "vocab.json", "merges.txt"
# Unicode's White_Space characters (the tokenizers library's \s).
_SPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_SPACES = re.compile(f"[{_SPACE}]+")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


class TokenizerError(UserError):
  pass


@functools.cache
def _byte_chars() -> tuple[str, ...]:
  """GPT-2's byte -> printable character table: printable Latin-1 bytes stand for themselves, the
  rest for characters from U+0100 on."""
  kept = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), 256)]
  extra = iter(range(256, 512))
  return tuple(chr(b) if b in kept else chr(next(extra)) for b in range(256))


def _kind(c: str) -> str:
  if re.fullmatch(f"[{_SPACE}]", c):
    return "space"
  return {"L": "letter", "N": "digit"}.get(unicodedata.category(c)[0], "other")


def pieces(text: str) -> list[str]:
  """The pre-tokenizer's pieces of normalised text (no markers)."""
  out, i = [], 0
  while i < len(text):
    kind = _kind(text[i])
    if kind == "space":
      i += 1
      continue
    contraction = next((c for c in _CONTRACTIONS if text.startswith(c, i)), None)
    if contraction:
      j = i + len(contraction)
    elif kind == "digit":
      j = i + 1
    else:  # a run of letters, or of other characters (which may hold apostrophes)
      j = i + 1
      while j < len(text) and _kind(text[j]) == kind:
        j += 1
    out.append(text[i:j])
    i = j
  return out


class ClipTokenizer:

  def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], source: str):
    self.vocab = vocab
    self.ranks = {pair: rank for rank, pair in enumerate(merges)}
    missing = [t for t in (START, END) if t not in vocab]
    if missing:
      raise TokenizerError(f"CLIP tokenizer {source!r} has no {missing[0]!r} token; pass a CLIP tokenizer.")
    self.start_id, self.end_id = vocab[START], vocab[END]
    self._bpe = functools.lru_cache(maxsize=4096)(self._bpe_uncached)

  @classmethod
  def from_dir(cls, directory: str) -> "ClipTokenizer":
    """tokenizer.json if present, else vocab.json + merges.txt; TokenizerError naming the file."""
    path = os.path.join(directory, TOKENIZER_FILE)
    try:
      if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
          data = json.load(f)
        model = data["model"]
        if model.get("type") != "BPE" or model.get("end_of_word_suffix") != SUFFIX:
          raise TokenizerError(f"CLIP tokenizer {path!r} is not CLIP's BPE (end-of-word suffix {SUFFIX!r}).")
        vocab = {**model["vocab"], **{t["content"]: t["id"] for t in data.get("added_tokens", [])}}
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        return cls(vocab, merges, path)
      path = os.path.join(directory, VOCAB_FILE)
      with open(path, encoding="utf-8") as f:
        vocab = json.load(f)
      path = os.path.join(directory, MERGES_FILE)
      with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\n") for line in f]
      merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
      return cls(vocab, merges, path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise TokenizerError(f"CLIP tokenizer file {path!r} is not readable ({type(e).__name__}: {e}); "
                           f"a CLIP folder holds {TOKENIZER_FILE} or {VOCAB_FILE} + {MERGES_FILE}.") from None

  def _bpe_uncached(self, piece: str) -> tuple[int, ...]:
    symbols = [_byte_chars()[b] for b in piece.encode("utf-8")]
    symbols[-1] += SUFFIX
    while len(symbols) > 1:
      pair = min(zip(symbols, symbols[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
      if pair not in self.ranks:
        break
      merged, i = [], 0
      while i < len(symbols):  # every occurrence, left to right
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
          merged.append(symbols[i] + symbols[i + 1])
          i += 2
        else:
          merged.append(symbols[i])
          i += 1
      symbols = merged
    return tuple(self.vocab.get(s, self.end_id) for s in symbols)

  def encode(self, text: str) -> list[int]:
    """Ids of <|startoftext|> text <|endoftext|>."""
    ids = [self.start_id]
    for part in re.split(f"({re.escape(START)}|{re.escape(END)})", text):
      if part in (START, END):
        ids.append(self.vocab[part])
        continue
      normalised = _SPACES.sub(" ", unicodedata.normalize("NFC", part)).lower()
      for piece in pieces(normalised):
        ids.extend(self._bpe(piece))
    return ids + [self.end_id]
