# Unit tests of ioscale_recovery: drive real python-socketio clients' receive and CONNECT paths with no server.
import asyncio
import json

import pytest
import socketio
from socketio import packet

from ioscale_recovery import RECOVERY_EVENT, RecoveryState, enable_recovery, recovery_state

FRESH = {'session': None, 'offset': None}


def wire(*args, nsp='/', id=None):
    """An encoded EVENT packet, as the Engine.IO layer hands it to the client."""
    prefix = '' if nsp == '/' else nsp + ','
    return '2' + prefix + ('' if id is None else str(id)) + json.dumps(list(args))


def verdict(recovered, session, id='pub-1', reason=None, missed=0, nsp='/'):
    return wire(RECOVERY_EVENT, {'recovered': recovered, 'session': session, 'id': id,
                                 'reason': reason, 'missed': missed}, nsp=nsp)


class Harness:
    """Runs one client's real code paths; sync and async clients are driven alike."""

    def __init__(self, client_class, auth=None, namespaces=('/',)):
        self.sio = enable_recovery(client_class())
        self.is_async = isinstance(self.sio, socketio.AsyncClient)
        self.sent = []
        self.sio.eio.sid = 'eio-sid'

        if self.is_async:
            async def send(encoded):
                self.sent.append(encoded)
        else:
            def send(encoded):
                self.sent.append(encoded)
        self.sio.eio.send = send  # where _send_packet ends up: capture instead of a socket
        # What connect() stores before the Engine.IO handshake; reconnections reuse them.
        self.sio.connection_auth = auth
        self.sio.connection_namespaces = list(namespaces)

    def run(self, result):
        return asyncio.run(result) if self.is_async else result

    def handshake(self):
        """A (re)connection: python-socketio evaluates auth and sends one CONNECT per namespace."""
        self.sent.clear()
        self.run(self.sio._handle_eio_connect())
        return {p.namespace or '/': p.data for p in map(self.decode, self.sent)}

    def receive(self, encoded):
        self.run(self.sio._handle_eio_message(encoded))

    @staticmethod
    def decode(encoded):
        return packet.Packet(encoded_packet=encoded)


CLIENTS = [socketio.Client, socketio.AsyncClient]


@pytest.fixture(params=CLIENTS, ids=['Client', 'AsyncClient'])
def client_class(request):
    return request.param


def test_async_client_is_detected():
    assert Harness(socketio.AsyncClient).is_async
    assert not Harness(socketio.Client).is_async


def test_dict_auth_is_merged_on_every_connect_and_not_modified(client_class):
    auth = {'token': 'jwt-1'}
    h = Harness(client_class, auth=auth)
    assert h.handshake() == {'/': {'token': 'jwt-1', 'ioscale_recovery': FRESH}}
    assert auth == {'token': 'jwt-1'}
    h.receive(verdict(False, 'S1', reason='new'))
    h.receive(wire('chat', 'hi', {'ioscale_offset': 'o1'}))
    auth['token'] = 'jwt-2'  # the app may change its auth between reconnections
    assert h.handshake() == {'/': {'token': 'jwt-2',
                                   'ioscale_recovery': {'session': 'S1', 'offset': 'o1'}}}


def test_callable_auth_is_evaluated_on_every_connect(client_class):
    calls = []

    def auth():
        calls.append(1)
        return {'token': f't{len(calls)}'}

    h = Harness(client_class, auth=auth)
    assert h.handshake()['/'] == {'token': 't1', 'ioscale_recovery': FRESH}
    h.receive(verdict(False, 'S1'))
    assert h.handshake()['/'] == {'token': 't2',
                                  'ioscale_recovery': {'session': 'S1', 'offset': None}}


def test_coroutine_auth_on_async_client():
    async def auth():
        return {'token': 'async'}

    h = Harness(socketio.AsyncClient, auth=auth)
    assert h.handshake()['/'] == {'token': 'async', 'ioscale_recovery': FRESH}


def test_missing_or_non_dict_auth_still_sends_the_opt_in(client_class):
    assert Harness(client_class).handshake()['/'] == {'ioscale_recovery': FRESH}
    assert Harness(client_class, auth=lambda: 'x').handshake()['/'] == {'ioscale_recovery': FRESH}


def test_offset_is_stripped_before_handlers_and_catch_all_and_remembered(client_class):
    h = Harness(client_class)
    seen, anything = [], []
    h.sio.on('chat', lambda *args: seen.append(args))
    h.sio.on('*', lambda event, *args: anything.append((event,) + args))
    h.handshake()
    h.receive(verdict(False, 'S1'))
    h.receive(wire('chat', 'hi', {'a': 1}, {'ioscale_offset': 'o7'}))
    h.receive(wire('other', {'ioscale_offset': 'o8'}))
    assert seen == [('hi', {'a': 1})]
    assert anything == [(RECOVERY_EVENT, {'recovered': False, 'session': 'S1', 'id': 'pub-1',
                                          'reason': None, 'missed': 0}),
                        ('other',)]
    assert h.sio.ioscale_offset == 'o8'


def test_namespace_class_handlers_see_stripped_args(client_class):
    seen = []
    base = socketio.AsyncClientNamespace if client_class is socketio.AsyncClient \
        else socketio.ClientNamespace

    class Chat(base):
        def on_chat(self, *args):
            seen.append(args)

    h = Harness(client_class)
    h.sio.register_namespace(Chat('/chat'))
    h.receive(wire('chat', 'hi', {'ioscale_offset': 'c1'}, nsp='/chat'))
    assert seen == [('hi',)]
    assert recovery_state(h.sio, '/chat').offset == 'c1'


def test_events_without_the_marker_pass_through(client_class):
    h = Harness(client_class)
    seen = []
    h.sio.on('plain', lambda *args: seen.append(list(args)))
    h.receive(wire('chat', {'ioscale_offset': 'o1'}))
    lookalikes = [['no marker'], [{'ioscale_offset': 'o9', 'other': 1}], [{'ioscale_offset': 9}],
                  [[{'ioscale_offset': 'o9'}]], [None], []]
    for args in lookalikes:
        h.receive(wire('plain', *args))
    assert seen == lookalikes
    assert h.sio.ioscale_offset == 'o1'


def test_event_with_ack_is_untouched_and_acked(client_class):
    h = Harness(client_class)
    got = []
    h.sio.on('ask', lambda *args: got.append(args) or 'yes')
    h.receive(wire('ask', 'q', {'ioscale_offset': 'oX'}, id=4))  # never sent so: left alone
    assert got == [('q', {'ioscale_offset': 'oX'})]
    ack = h.decode(h.sent[-1])
    assert (ack.packet_type, ack.id, ack.data) == (packet.ACK, 4, ['yes'])
    assert h.sio.ioscale_offset is None


def test_non_recovered_verdict_resets_the_offset_and_keeps_the_new_session(client_class):
    h = Harness(client_class, auth={'token': 'jwt'})
    h.handshake()
    h.receive(verdict(False, 'S1', reason='new'))
    h.receive(wire('chat', 'm1', {'ioscale_offset': 'o3'}))
    assert (h.sio.ioscale_session, h.sio.ioscale_offset, h.sio.ioscale_id) == ('S1', 'o3', 'pub-1')

    h.handshake()
    h.receive(verdict(False, 'S2', id='pub-2', reason='expired'))
    assert recovery_state(h.sio) == RecoveryState(session='S2', offset=None, id='pub-2',
                                                  recovered=False)
    assert h.handshake()['/'] == {'token': 'jwt',
                                  'ioscale_recovery': {'session': 'S2', 'offset': None}}


def test_recovered_verdict_keeps_the_offset_and_replays_advance_it(client_class):
    h = Harness(client_class)
    h.handshake()
    h.receive(verdict(False, 'S1'))
    h.receive(wire('chat', 'm1', {'ioscale_offset': 'o1'}))
    h.handshake()
    assert h.sio.recovered is False
    h.receive(verdict(True, 'S1b', missed=1))
    assert (h.sio.recovered, h.sio.ioscale_session, h.sio.ioscale_offset) == (True, 'S1b', 'o1')
    h.receive(wire('chat', 'missed', {'ioscale_offset': 'o2'}))
    assert h.handshake()['/']['ioscale_recovery'] == {'session': 'S1b', 'offset': 'o2'}
    assert h.sio.recovered is False  # unknown again until the next verdict


def test_app_still_receives_the_verdict_with_state_already_updated(client_class):
    h = Harness(client_class)
    got = []
    h.sio.on(RECOVERY_EVENT, lambda info: got.append((info, h.sio.ioscale_session)))
    h.receive(verdict(False, 'S1', reason='new'))
    assert got == [({'recovered': False, 'session': 'S1', 'id': 'pub-1', 'reason': 'new',
                     'missed': 0}, 'S1')]


def test_each_namespace_keeps_its_own_state(client_class):
    h = Harness(client_class, auth={'token': 't'}, namespaces=('/', '/admin'))
    h.handshake()
    h.receive(verdict(False, 'S-main'))
    h.receive(verdict(True, 'S-admin', nsp='/admin'))
    h.receive(wire('chat', {'ioscale_offset': 'm1'}))
    h.receive(wire('audit', {'ioscale_offset': 'a1'}, nsp='/admin'))
    connects = h.handshake()
    assert connects['/'] == {'token': 't',
                             'ioscale_recovery': {'session': 'S-main', 'offset': 'm1'}}
    assert connects['/admin'] == {'token': 't',
                                  'ioscale_recovery': {'session': 'S-admin', 'offset': 'a1'}}
    assert h.sio.ioscale_session == 'S-main'  # the attributes mirror "/" only


def test_enable_twice_is_a_no_op_and_bad_input_is_refused(client_class):
    sio = client_class()
    assert enable_recovery(enable_recovery(sio)) is sio
    h = Harness(client_class)
    enable_recovery(h.sio)
    h.receive(wire('chat', 'x', {'ioscale_offset': 'o1'}))
    assert h.handshake()['/'] == {'ioscale_recovery': {'session': None, 'offset': 'o1'}}
    with pytest.raises(TypeError):
        enable_recovery(object())
    with pytest.raises(ValueError):
        recovery_state(client_class())
