# ioscale_recovery: lets a python-socketio 5.x Client or AsyncClient take part in ioscale's session recovery.
"""ioscale session recovery for python-socketio 5.x clients.

    sio = enable_recovery(socketio.Client())   # or socketio.AsyncClient()
    sio.connect(url, auth={'token': jwt})

Every CONNECT then carries ``ioscale_recovery: {session, offset}`` merged into the app's
auth, the ``{"ioscale_offset": ...}`` last argument of recoverable events is removed before
any handler sees it, and ``ioscale:recovery`` verdicts are tracked per namespace. See README.md.
"""
import dataclasses
import inspect
import threading
import warnings
from typing import Optional

from socketio import packet as sio_packet

__all__ = ['RECOVERY_EVENT', 'RecoveryState', 'enable_recovery', 'recovery_state']

#: Event the server emits right after each namespace CONNECT, with the recovery verdict.
RECOVERY_EVENT = 'ioscale:recovery'
AUTH_KEY = 'ioscale_recovery'
OFFSET_KEY = 'ioscale_offset'


@dataclasses.dataclass(frozen=True)
class RecoveryState:
    """What the helper knows about one namespace; frozen so callers cannot corrupt it."""
    session: Optional[str] = None  # token to present on the next CONNECT
    offset: Optional[str] = None   # last recoverable event seen in that session
    id: Optional[str] = None       # the socket's public id from the last verdict
    recovered: bool = False        # verdict of the last ioscale:recovery


_EMPTY = RecoveryState()


def _offset_of(arg):
    # Strict shape: a dict with any other key, or a non-string value, is app data.
    if isinstance(arg, dict) and len(arg) == 1 and isinstance(arg.get(OFFSET_KEY), str):
        return arg[OFFSET_KEY]
    return None


class _Recovery:
    """Per-namespace state of one client, shared by its send and receive hooks."""

    def __init__(self, sio):
        self.sio = sio
        # socketio.Client runs each received message in its own thread, so updates that
        # read-modify-write the state are serialised; harmless under asyncio.
        self.lock = threading.Lock()
        self.states = {}

    def state(self, namespace):
        return self.states.get(namespace or '/', _EMPTY)

    def _update(self, namespace, **changes):  # caller holds self.lock
        new = dataclasses.replace(self.state(namespace), **changes)
        self.states[namespace] = new
        if namespace == '/':
            # Plain attributes mirror the default namespace, for the common single-namespace app.
            self.sio.ioscale_session = new.session
            self.sio.ioscale_offset = new.offset
            self.sio.ioscale_id = new.id
            self.sio.recovered = new.recovered

    def outgoing(self, pkt):
        """Returns pkt, or for a CONNECT a copy whose payload carries the opt-in."""
        if pkt.packet_type != sio_packet.CONNECT:
            return pkt
        namespace = pkt.namespace or '/'
        with self.lock:
            # Unknown until this connection's verdict arrives.
            self._update(namespace, recovered=False)
            state = self.state(namespace)
        # Copied, never modified: python-socketio passes one auth object to every namespace.
        # A CONNECT payload must be a dict, so a non-dict app auth is replaced.
        data = dict(pkt.data) if isinstance(pkt.data, dict) else {}
        data[AUTH_KEY] = {'session': state.session, 'offset': state.offset}
        return self.sio.packet_class(sio_packet.CONNECT, data=data, namespace=pkt.namespace)

    def incoming(self, namespace, id, data):
        """Returns the event data the app must see, noting offsets and verdicts on the way."""
        namespace = namespace or '/'
        # An event with an ack id never carries the marker, so its data is left alone.
        if id is None and isinstance(data, list) and len(data) >= 2:
            offset = _offset_of(data[-1])
            if offset is not None:
                data = data[:-1]
                with self.lock:
                    # Noted before dispatch: the event counts as delivered once handlers run.
                    self._update(namespace, offset=offset)
        if data and data[0] == RECOVERY_EVENT and len(data) >= 2 and isinstance(data[1], dict):
            self._verdict(namespace, data[1])
        return data

    def _verdict(self, namespace, info):
        recovered = info.get('recovered') is True
        changes = {'recovered': recovered}
        if isinstance(info.get('session'), str):
            changes['session'] = info['session']
        if isinstance(info.get('id'), str):
            changes['id'] = info['id']
        if not recovered:
            # A fresh session: an offset from the old one means nothing in it.
            changes['offset'] = None
        with self.lock:
            self._update(namespace, **changes)


def enable_recovery(sio):
    """Enables ioscale session recovery on a socketio.Client or socketio.AsyncClient.

    Call before ``connect()``. Returns the same client, which then has the attributes
    ``ioscale_session``, ``ioscale_offset``, ``ioscale_id`` and ``recovered`` for the
    default namespace "/"; ``recovery_state(sio, namespace)`` gives any namespace.
    """
    if getattr(sio, '_ioscale_recovery', None) is not None:
        return sio  # idempotent: a second wrap would merge and strip twice
    if not hasattr(sio, '_handle_event') or not hasattr(sio, '_send_packet'):
        raise TypeError('enable_recovery: expected a python-socketio 5.x Client or AsyncClient')
    if getattr(sio, 'connected', False):
        warnings.warn('ioscale_recovery: enabled on a connected client; recovery starts '
                      'with the next connection', RuntimeWarning, stacklevel=2)

    rec = _Recovery(sio)
    sio._ioscale_recovery = rec
    sio.ioscale_session = sio.ioscale_offset = sio.ioscale_id = None
    sio.recovered = False

    # Why these two methods: python-socketio evaluates the app's auth (dict, function or
    # coroutine function) once per Engine.IO connection and sends that one value in the CONNECT
    # of every namespace via self._send_packet, so merging there gives each namespace its own
    # session and offset and leaves sio.connection_auth, which connect() overwrites anyway,
    # untouched. Every received EVENT and BINARY_EVENT reaches self._handle_event(namespace,
    # id, data) before any handler, the catch-all '*' and namespace classes included. Both are
    # looked up on the instance at call time, so instance attributes override them.
    send_packet, handle_event = sio._send_packet, sio._handle_event
    if inspect.iscoroutinefunction(handle_event):  # AsyncClient, or a subclass of it
        async def _send_packet(pkt):
            return await send_packet(rec.outgoing(pkt))

        async def _handle_event(namespace, id, data):
            return await handle_event(namespace, id, rec.incoming(namespace, id, data))
    else:
        def _send_packet(pkt):
            return send_packet(rec.outgoing(pkt))

        def _handle_event(namespace, id, data):
            return handle_event(namespace, id, rec.incoming(namespace, id, data))

    sio._send_packet = _send_packet
    sio._handle_event = _handle_event
    return sio


def recovery_state(sio, namespace='/'):
    """Returns the RecoveryState of one namespace of a client passed to enable_recovery."""
    rec = getattr(sio, '_ioscale_recovery', None)
    if rec is None:
        raise ValueError('recovery_state: enable_recovery() was not called on this client')
    with rec.lock:
        return rec.state(namespace)
