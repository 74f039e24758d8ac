"""Stop strings over a stream of new tokens: the server's streams and the evaluation tasks' `generate_until`
cut a completion before the first stop string, decided as tokens arrive so that generation stops there."""

from __future__ import annotations


class StopText:
    """The text of one request's new tokens, cut at the first stop string; what a stream may show so far."""

    def __init__(self, tokenizer, stops: list[str]):
        self.tokenizer, self.stops, self.text, self.stopped = tokenizer, stops, "", False

    def update(self, request, _token: int) -> bool:
        self.text = self.tokenizer.decode(request.new_ids)
        for stop in self.stops:
            at = self.text.find(stop)
            if at >= 0:
                self.text, self.stopped = self.text[:at], True
        return not self.stopped

    def settled(self, finished: bool) -> str:
        """Text no later token can change: a possible start of a stop string and a partial character (U+FFFD
        from an incomplete UTF-8 sequence) are held back until the next token or the end."""
        if finished or self.stopped:
            return self.text
        text = self.text.rstrip("\ufffd")
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:k]):
                    text = text[:-k]
                    break
        return text
