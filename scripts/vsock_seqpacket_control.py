#!/usr/bin/env python3
"""The control of finding vsock-seqpacket-egress-redirect-splits-messages: the case's two sends (1000
bytes, then 96 KiB) over a plain AF_VSOCK SOCK_SEQPACKET pair on the loopback transport, no sockmap.
Each recv must return one whole message: prints "1000 98304" on a correct kernel.
Run it in a guest: lab run KERNEL -- python3 scripts/vsock_seqpacket_control.py"""
import socket
import time

LOCAL = 1  # VMADDR_CID_LOCAL
listener = socket.socket(socket.AF_VSOCK, socket.SOCK_SEQPACKET)
listener.bind((socket.VMADDR_CID_ANY, socket.VMADDR_PORT_ANY))
listener.listen(1)
client = socket.socket(socket.AF_VSOCK, socket.SOCK_SEQPACKET)
client.connect((LOCAL, listener.getsockname()[1]))
server, _ = listener.accept()
client.send(b"x" * 1000)
client.send(b"y" * 96 * 1024)
time.sleep(0.5)  # both messages queued before the first recv, as in the case
print("control recv sizes:", len(server.recv(192 * 1024)), len(server.recv(192 * 1024)))
