"""An asyncio MLLP server (python-hl7's stream helpers do the framing: 0x0B message 0x1C 0x0D).

- Each message is handled in a thread (Redis and the broker are blocking clients), so many connections
  are served at once; the answer on a connection goes back in order, one ACK per message.
- Bounded: a frame longer than MAX_BODY_BYTES is answered AR and the connection closed (its framing is
  lost); a connection that sends no whole message within MLLP_READ_TIMEOUT_S is closed.
- Garbage never stops the listener: a frame that is not a message is answered AR (MSA-2 empty when no
  MSH-10 can be read); a frame without the start byte too. Bytes between frames (an LF or CRLF after
  0x1C 0x0D, noise before the next 0x0B) are skipped, as the MLLP spec (HL7 v2.5 appendix C.4.3) asks of
  receivers.
- The ACK is written in the message's character set (MSH-18), as over HTTP.
- SIGTERM: stop accepting, close idle connections, let messages being handled finish and answer them
  (an AA is only sent after the store succeeded; a message cut off unanswered is re-sent by the engine).
- Every connection audits as MLLP_CALLER: the port is not authenticated, hence loopback by default.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

from hl7.mllp import InvalidBlockError, start_hl7_server
from hl7.mllp.streams import HL7StreamReader

from shared.config import Settings
from shared.interop.codes import load_code_map
from shared.interop.hl7_ack import Ack, build_ack
from shared.interop.hl7_oru import Header, Issue
from shared.interop.hl7v2 import Door, handle_message
from shared.queue import make_celery
from shared.store import connect_from_settings

log = logging.getLogger("services.mllp")

HANDLER_THREADS = 32
SHUTDOWN_GRACE_S = 10.0
START_BLOCK, END_BLOCK = b"\x0b", b"\x1c\r"


async def read_frame(reader: HL7StreamReader) -> bytes:
    """One MLLP frame's content (HL7 v2.5 appendix C.4.3: 0x0B data 0x1C 0x0D). Whatever precedes the
    start byte (an LF or CRLF an engine writes after the end of the previous frame, noise) is dropped;
    a frame with no start byte at all is an InvalidBlockError. Longer than the limit: ValueError (the
    reader's buffer is dropped, as python-hl7's readblock does)."""
    try:
        block = await reader.readuntil(END_BLOCK)
    except asyncio.LimitOverrunError as exc:
        reader._buffer.clear()  # noqa: SLF001 - python-hl7's readblock does the same on overrun
        reader._maybe_resume_transport()  # noqa: SLF001
        raise ValueError(str(exc)) from exc
    start = block.find(START_BLOCK)
    if start < 0:
        raise InvalidBlockError("Block does not begin with Start Block character <VT>")
    return block[start + 1 : -len(END_BLOCK)]


class Listener:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = connect_from_settings(settings, for_requests=True)
        self.celery = make_celery(settings, "cml-mllp", request_path=True)
        self.codes = load_code_map(settings.lab_codes_file)
        self.door = Door(settings.mllp_caller, "MLLP")
        self.executor = ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="mllp")
        self.busy: dict[asyncio.Task, bool] = {}  # connection -> handling a message now
        self.stopping = False

    def _handle(self, block: bytes) -> Ack:
        return handle_message(self.redis, self.celery, block, self.door, self.settings, self.codes)

    async def connection(self, reader, writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.busy[task] = False
        loop = asyncio.get_running_loop()
        try:
            while not self.stopping:
                close_after = False
                try:
                    block = await asyncio.wait_for(read_frame(reader), self.settings.mllp_read_timeout_s)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    break  # idle, stalled or closed by the peer
                except InvalidBlockError:
                    block, reason = None, "a frame must start with 0x0B (MLLP)"
                except ValueError:  # longer than the reader's limit: the framing is lost
                    block, reason = None, f"the message is larger than {self.settings.max_body_bytes} bytes"
                    close_after = True
                self.busy[task] = True
                if block is None:
                    ack = build_ack(Header(), "AR", [Issue(None, 100, reason)])
                else:
                    ack = await loop.run_in_executor(self.executor, self._handle, block)
                writer.writeblock(ack.encoded())
                await writer.drain()
                self.busy[task] = False
                if close_after:
                    break
        except ConnectionError:
            pass
        finally:
            self.busy.pop(task, None)
            writer.close()

    async def stop(self) -> None:
        self.stopping = True
        for task, busy in list(self.busy.items()):
            if not busy:
                task.cancel()
        if self.busy:
            await asyncio.wait(list(self.busy), timeout=SHUTDOWN_GRACE_S)
        self.executor.shutdown(wait=False, cancel_futures=True)


async def run(settings: Settings) -> None:
    listener = Listener(settings)
    server = await start_hl7_server(
        listener.connection, settings.mllp_host, settings.mllp_port, limit=settings.max_body_bytes
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("MLLP listening on %s:%s as %s", settings.mllp_host, settings.mllp_port, settings.mllp_caller)
    await stop.wait()
    log.info("MLLP stopping")
    server.close()
    await listener.stop()
    await server.wait_closed()
    log.info("MLLP stopped")
