"""Term matching on normalised prompt text: survives case, accents, look-alike letters, punctuation,
leetspeak, plurals and inflections, letter-spaced obfuscation ("n u d e", "k.i.l.l") and stretched
letters ("kiiill"), and does not fire on benign phrases the policy allows ("a killer whale").

Matching is on whole words, never substrings ("skill" is not "kill"): a term matches a word that is
the term or one of its inflections (kill: kills, killed, killing, killer; nude: nudes; knife:
knives), compared with repeated letters collapsed on both sides. Multi-word terms match consecutive
words. Allowed phrases are removed from the text first, so a term inside one never fires while
the same term elsewhere in the prompt still does.
"""
import dataclasses
import re
import unicodedata

# Digits and symbols read as letters inside a word ("k1ll", "n00d3", "$ex").
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "@": "a", "$": "s",
                       "!": "i", "|": "l", "+": "t"})
# Cyrillic and Greek letters that look like Latin ones (NFKD does not map them).
_LOOKALIKE = str.maketrans("аеорсухіјѕνοαεκτ", "aeopcyxijsvoaekt")
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u2060\ufeff]")  # soft hyphen, zero-width characters
_WORD = re.compile(r"[a-z0-9@$!|+]+")
_MIN_SPELLED = 3  # this many single letters in a row are one spelled-out word ("n u d e")


def _collapse(word: str) -> str:
  """Runs of one letter become one letter (kiiill -> kil), to compare stretched words."""
  return re.sub(r"(.)\1+", r"\1", word)


def _stretched(word: str) -> bool:
  return re.search(r"(.)\1\1", word) is not None


def _tokens(text: str, join_inner: bool = False) -> list[tuple[str, bool]]:
  """(word, spelled out) pairs: lower case, no accents or look-alikes, leetspeak read inside words
  that hold a letter (a bare "3" stays a number), runs of single characters joined into one word;
  with join_inner, punctuation inside a word is dropped ("exe.cution") instead of splitting it."""
  text = unicodedata.normalize("NFKD", _INVISIBLE.sub("", text)).lower().translate(_LOOKALIKE)
  text = "".join(c for c in text if not unicodedata.combining(c))
  if join_inner:
    text = re.sub(r"(?<=[a-z0-9])[^\sa-z0-9@$!|+]+(?=[a-z0-9])", "", text)
  raw = _WORD.findall(text)
  tokens, run = [], []
  for w in raw + [""]:  # "" flushes the last run
    if len(w) == 1 and w.translate(_LEET).isalpha():
      run.append(w)
      continue
    if len(run) >= _MIN_SPELLED and sum(c.isalpha() for c in run) >= 2:
      tokens.append(("".join(run).translate(_LEET), True))
    else:
      tokens += [(c, False) for c in run]  # a lone "3" or "a" stays as written
    run = []
    if w:
      w = w.translate(_LEET) if re.search("[a-z]", w) else w
      tokens.append((re.sub(r"[^a-z0-9]", "", w), False))
  return [(w, spelled) for w, spelled in tokens if w]


def words(text: str) -> list[str]:
  """The normalised words of `text` (see _tokens)."""
  return [w for w, _ in _tokens(text)]


def inflections(word: str) -> set[str]:
  """The word and its regular plural, verb and agent forms, generated from the term so that only
  forms of a listed word match."""
  forms = {word, word + "s", word + "es", word + "ed", word + "ing", word + "er", word + "ers"}
  if re.search(r"[^aeiou][aeiou][bdgklmnprt]$", word):  # stab -> stabbing, stabbed
    forms |= {word + word[-1] + s for s in ("ed", "ing", "er", "ers")}
  if word.endswith("e"):
    forms |= {word[:-1] + s for s in ("ed", "ing", "er", "ers")}
  if word.endswith("y"):
    forms |= {word[:-1] + "ies", word[:-1] + "ied"}
  if word.endswith("fe"):
    forms.add(word[:-2] + "ves")
  elif word.endswith("f"):
    forms.add(word[:-1] + "ves")
  return forms


class _Forms:
  """A word's inflections; a stretched prompt word ("kiiilling") is compared with repeats collapsed."""

  def __init__(self, word: str):
    self.exact = inflections(word)
    self.collapsed = {_collapse(f) for f in self.exact}

  def match(self, word: str) -> bool:
    return word in self.exact or (_stretched(word) and _collapse(word) in self.collapsed)


@dataclasses.dataclass(frozen=True)
class Match:
  term: str  # as the policy wrote it
  text: str  # the prompt's words that matched, normalised


class TermMatcher:
  """Finds the first listed term in a prompt, outside the allowed phrases."""

  def __init__(self, terms, allowed=()):
    self._terms = [(term, words(term)) for term in terms]
    allowed = [words(phrase) for phrase in allowed]
    self._allowed = [(parts, _Forms(parts[-1])) for parts in allowed if parts]
    self._forms = {term: _Forms(parts[-1]) for term, parts in self._terms if parts}
    # A multi-word term also matches written as one word ("blowjob").
    self._joined = [(term, _Forms("".join(parts))) for term, parts in self._terms if len(parts) > 1]

  def _without_allowed(self, found: list[str]) -> list[str | None]:
    """The words with every allowed phrase blanked (None), so no term can match across or inside one."""
    kept = list(found)
    for parts, last in self._allowed:  # "killer whale" also allows "killer whales"
      n = len(parts)
      for i in range(len(found) - n + 1):
        if found[i:i + n - 1] == parts[:-1] and last.match(found[i + n - 1]):
          kept[i:i + n] = [None] * n
    return kept

  def find(self, text: str) -> Match | None:
    return self._find(_tokens(text)) or self._find(_tokens(text, join_inner=True))

  def _find(self, tokens) -> Match | None:
    kept = self._without_allowed([w for w, _ in tokens])
    for term, parts in self._terms:
      n = len(parts)
      for i in range(len(kept) - n + 1):
        window = kept[i:i + n]
        if None not in window and window[:-1] == parts[:-1] and self._forms[term].match(window[-1]):
          return Match(term, " ".join(w for w, _ in tokens[i:i + n]))
    for w in filter(None, kept):
      for term, forms in self._joined:
        if forms.match(w):
          return Match(term, w)
    # A spelled-out run may carry letters of its neighbours ("a n u d e"): look inside it. Only
    # there: inside ordinary words a substring is usually innocent ("skill", "therapist").
    for w, (word, spelled) in zip(kept, tokens):
      for term, parts in self._terms:
        if w and spelled and len("".join(parts)) >= 3 and "".join(parts) in w:
          return Match(term, word)
    return None
