"""Tries one thing the sandbox may forbid and says how it went: RESULT is "ok <detail>" or "<Exception>: <message>".

ACTION is "<name>" or "<name>:<argument>":
  socket_inet             socket.socket(AF_INET, SOCK_STREAM)
  socket_unix             an AF_UNIX socket pair that carries a message
  http_get:<port>         GET /v2/health/live from 127.0.0.1:<port> over TCP (detail: the status line)
  read:<path>             read a file (detail: its length)
  write:<path>            create and write a file
  write_home              write and read back a file in $HOME (detail: its path)
  read_model_dir          read config.pbtxt and list the version directory of this model
  ones:<bytes>            np.ones(<bytes>, uint8) (touches every page)
  empty:<bytes>           np.empty(<bytes>, uint8) (reserves address space only)
  open_files:<n>          hold <n> descriptors of /dev/null at once
  uid                     os.getuid()
  env:<name>              os.environ[<name>]
  netns                   os.readlink("/proc/self/ns/net")
  pid                     os.getpid()
"""

import os
import socket

import numpy as np
import triton_python_backend_utils as pb_utils


def http_get(port, host="127.0.0.1"):
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"GET /v2/health/live HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        return s.recv(4096).split(b"\r\n", 1)[0].decode()


def socket_unix():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(b"ping")
        return b.recv(4).decode()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, text="written by sandbox_probe"):
    with open(path, "w") as f:
        f.write(text)
    return path


def write_home():
    path = os.path.join(os.environ["HOME"], "probe.txt")
    write(path, "home")
    with open(path) as f:
        assert f.read() == "home"
    return path


def open_files(n):
    held = []
    try:
        for _ in range(int(n)):
            held.append(open("/dev/null", "rb"))
        return str(len(held))
    finally:
        for f in held:
            f.close()


class TritonPythonModel:
    def initialize(self, args):
        self.model_dir = args["model_repository"]
        self.version_dir = os.path.join(self.model_dir, args["model_version"])

    def read_model_dir(self):
        with open(os.path.join(self.model_dir, "config.pbtxt")) as f:
            config = f.read()
        return f"{len(config)} {sorted(os.listdir(self.version_dir))}"

    def run(self, action):
        name, _, arg = action.partition(":")
        actions = {
            "socket_inet": lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM).close(),
            "socket_unix": socket_unix,
            "http_get": lambda: http_get(arg),
            "http_get_localhost": lambda: http_get(arg, "localhost"),
            "read": lambda: len(read(arg)),
            "write": lambda: write(arg),
            "write_home": write_home,
            "read_model_dir": self.read_model_dir,
            "ones": lambda: int(np.ones(int(arg), dtype=np.uint8).size),
            "empty": lambda: int(np.empty(int(arg), dtype=np.uint8).size),
            "open_files": lambda: open_files(arg),
            "uid": os.getuid,
            "env": lambda: os.environ.get(arg, "<unset>"),
            "netns": lambda: os.readlink("/proc/self/ns/net"),
            "pid": os.getpid,
        }
        try:
            detail = actions[name]()
        except Exception as e:  # noqa: BLE001 - the outcome is the answer
            return f"{type(e).__name__}: {e}"
        return "ok" if detail is None else f"ok {detail}"

    def execute(self, requests):
        responses = []
        for request in requests:
            action = pb_utils.get_input_tensor_by_name(request, "ACTION").as_numpy()[0].decode()
            result = np.array([self.run(action).encode()], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RESULT", result)]))
        return responses
