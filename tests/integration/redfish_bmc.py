# SPDX-License-Identifier: MIT
"""A minimal Redfish service, the BMC the redfish power driver is tested against. No real Redfish service
runs on these machines (a server's BMC; DMTF's Redfish-Mockup-Server and sushy-tools are not in Debian),
so this one answers what the driver asks of a BMC, as the Redfish specification (DSP0266) and schema have
it: the Systems collection, one ComputerSystem with its PowerState, its Boot override and its
ComputerSystem.Reset action, over HTTPS with basic authentication, errors in Redfish's error body. The
machine's state and every change it was told go to a JSON file the test reads.

    redfish_bmc.py ADDRESS PORT CERT KEY USER PASSWORD STATE_FILE
"""

import base64
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

address, port, cert, key, user, password, state_file = sys.argv[1:8]
SYSTEM = "/redfish/v1/Systems/1"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
state = {"power": "Off", "enabled": "Disabled", "target": "None", "log": []}


def save():
    with open(state_file + ".tmp", "w") as f:
        json.dump(state, f)
    os.replace(state_file + ".tmp", state_file)


def boot():
    """The machine starts: from the network once if it was told so, and the override is spent."""
    if state["enabled"] == "Once":
        state["log"].append(f"booted from {state['target']}")
        state["enabled"], state["target"] = "Disabled", "None"
    else:
        state["log"].append("booted from its disk")


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("OData-Version", "4.0")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="pureboot-test-bmc"')
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        self.reply(status, {"error": {"code": "Base.1.8.GeneralError", "message": "See @Message.ExtendedInfo",
                                      "@Message.ExtendedInfo": [{"MessageId": "Base.1.8.GeneralError",
                                                                 "Message": message}]}})

    def allowed(self):
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.error(401, "The user name or password is not right.")
            return False
        return True

    def body(self):
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def system(self):
        return {"@odata.id": SYSTEM, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem", "Id": "1",
                "PowerState": state["power"],
                "Boot": {"BootSourceOverrideEnabled": state["enabled"],
                         "BootSourceOverrideTarget": state["target"]},
                "Actions": {"#ComputerSystem.Reset": {
                    "target": RESET,
                    "ResetType@Redfish.AllowableValues": ["On", "ForceOff", "ForceRestart", "GracefulShutdown"]}}}

    def do_GET(self):
        if not self.allowed():
            return
        if self.path == "/redfish/v1/Systems":
            return self.reply(200, {"@odata.id": "/redfish/v1/Systems", "Members@odata.count": 1,
                                    "Members": [{"@odata.id": SYSTEM}]})
        if self.path == SYSTEM:
            return self.reply(200, self.system())
        self.error(404, f"There is no resource at {self.path}.")

    def do_PATCH(self):
        if not self.allowed():
            return
        if self.path != SYSTEM:
            return self.error(405, f"{self.path} cannot be changed.")
        b = self.body().get("Boot", {})
        enabled, target = b.get("BootSourceOverrideEnabled"), b.get("BootSourceOverrideTarget")
        if enabled not in ("Once", "Continuous", "Disabled") or target not in ("None", "Pxe", "Hdd", "Cd"):
            return self.error(400, f"The Boot values {b} are not allowed.")
        state["enabled"], state["target"] = enabled, target
        state["log"].append(f"boot {target} {enabled}")
        save()
        self.reply(204)

    def do_POST(self):
        if not self.allowed():
            return
        if self.path != RESET:
            return self.error(404, f"There is no action at {self.path}.")
        kind = self.body().get("ResetType")
        if kind not in ("On", "ForceOff", "ForceRestart", "GracefulShutdown"):
            return self.error(400, f"The ResetType {kind} is not one of the allowable values.")
        if kind == "ForceRestart" and state["power"] == "Off":
            return self.error(409, "The system is off; it cannot restart.")
        state["log"].append(f"reset {kind}")
        if kind in ("ForceOff", "GracefulShutdown"):
            state["power"] = "Off"
        elif kind == "On" and state["power"] == "Off" or kind == "ForceRestart":
            state["power"] = "On"
            boot()
        save()
        self.reply(204)

    do_PUT = do_DELETE = lambda self: self.error(405, "Not here.")


server = ThreadingHTTPServer((address, int(port)), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
save()
server.serve_forever()
