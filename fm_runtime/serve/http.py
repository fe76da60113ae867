"""The HTTP/1.1 parser fm-run serve runs under uvicorn, with the request head bounded.

uvicorn's httptools parser buffers a request line and its headers for as long as a client sends
them (a 20 MB header line was accepted); h11 bounds them but parses slower. This is httptools with
a bound: a head still incomplete past MAX_HEAD bytes, or a whole one whose line and headers add up
past it, is answered 431 and the connection closed, so a client holds at most MAX_HEAD plus one
read of the server's memory before its body counts against --max-body.
"""
from __future__ import annotations

MAX_HEAD = 64 * 1024        # nginx allows 4 x 8 KiB by default, Node 16 KiB; no API here needs more


def protocol():
    """What uvicorn.Config(http=...) takes: httptools with the head bounded, or h11 with its own
    bound where httptools is not installed."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    class BoundedHead(HttpToolsProtocol):
        # a head arriving in pieces is counted by the bytes received while it is incomplete (so
        # one endless line is cut); a whole head in one read, by its parsed parts
        head_bytes = parsed = 0
        in_head, too_large = True, False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.in_head, self.head_bytes, self.parsed = True, 0, 0

        def on_url(self, url: bytes) -> None:
            self.count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self.count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def count(self, nbytes: int) -> None:
            self.parsed += nbytes
            if self.parsed > MAX_HEAD:
                self.too_large = True
                raise ValueError("request head too large")      # the parser stops; send_400_response answers

        def on_headers_complete(self) -> None:
            self.in_head = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.in_head and not self.transport.is_closing():
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD:
                    self.refuse_head()

        def send_400_response(self, msg: str) -> None:
            if self.too_large:
                self.refuse_head()
            else:
                super().send_400_response(msg)

        def refuse_head(self) -> None:
            msg = f"the request line and headers exceed {MAX_HEAD // 1024} KiB\n".encode()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: " + str(len(msg)).encode() + b"\r\n"
                                 b"connection: close\r\n\r\n" + msg)
            self.transport.close()

    return BoundedHead
