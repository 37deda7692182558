"""
A FAKE Grafana: an HTTP server in a thread that answers the part of
Grafana's documented HTTP API the grafana hook uses, the way the
documentation says Grafana answers it. It is not Grafana; the same tests
run against a real Grafana when ``LORRYGATE_GRAFANA_URL`` is set
(``http://admin:admin@localhost:3000``).

Followed (Grafana HTTP API reference, docs/sources/developers/http_api/):

- authentication: ``Authorization: Bearer <service account token>`` or basic
  auth; otherwise 401 ``{"message": "Unauthorized"}`` (auth.md);
- folders (folder.md): ``GET /api/folders/:uid`` (404 ``folder not found``),
  ``POST /api/folders`` with ``uid`` and ``title`` (409 when the title or
  uid exists);
- data sources (data_source.md): ``GET /api/datasources/uid/:uid`` (404
  ``Data source not found``), ``POST /api/datasources`` (400 without name or
  type, 409 ``data source with the same name already exists``),
  ``PUT /api/datasources/uid/:uid``;
- dashboards (dashboard.md): ``GET /api/dashboards/uid/:uid`` answers
  ``{"dashboard": ..., "meta": {"folderUid": ...}}`` (404 ``Dashboard not
  found``); ``POST /api/dashboards/db`` with ``dashboard``, ``folderUid``,
  ``overwrite``, ``message``: 400 without a title, 412 ``version-mismatch``
  when the dashboard changed since the version sent (without overwrite),
  412 ``name-exists`` for a second dashboard of the same title in a folder;
  200 ``{"id", "uid", "url", "status": "success", "version"}``, the version
  counting up with every save.

Fault modes for the tests: ``hang`` holds every request until `release`,
``down`` answers 503 to everything.
"""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeGrafana:
    def __init__(self, token: str = "glsa_test", user: str = "admin", password: str = "admin"):
        self.token = token
        self.basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.folders = {}
        self.datasources = {}
        self.dashboards = {}
        self.meta = {}
        self.requests = []
        self.mode = "up"
        self.held = 0
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._ids = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fake.requests.append((self.command, self.path))
                if fake.mode == "hang":
                    with fake._lock:
                        fake.held += 1
                    fake._released.wait(60)
                    with fake._lock:
                        fake.held -= 1
                if fake.mode == "down":
                    code, answer = 503, {"message": "Service Unavailable"}
                else:
                    with fake._lock:
                        code, answer = fake.answer(self.command, self.path, self.headers.get("Authorization"), body)
                data = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeGrafana":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def hang(self) -> None:
        self._released.clear()
        self.mode = "hang"

    def release(self, mode: str = "up") -> None:
        self.mode = mode
        self._released.set()

    # -- the API -------------------------------------------------------------

    def answer(self, method, path, authorization, body):
        if authorization not in (f"Bearer {self.token}", f"Basic {self.basic}"):
            return 401, {"message": "Unauthorized"}
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return 400, {"message": "bad request data"}
        path = path.split("?")[0]
        for pattern, handler in self.ROUTES:
            match = re.fullmatch(pattern, f"{method} {path}")
            if match:
                return handler(self, payload, *match.groups())
        return 404, {"message": "Not found"}

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def get_folder(self, payload, uid):
        folder = self.folders.get(uid)
        return (200, folder) if folder else (404, {"message": "folder not found"})

    def post_folder(self, payload):
        uid, title = payload.get("uid") or f"f{self._next_id()}", payload.get("title")
        if not title:
            return 400, {"message": "folder title cannot be empty"}
        if uid in self.folders or any(f["title"] == title for f in self.folders.values()):
            return 409, {"message": "a folder with the same name already exists"}
        self.folders[uid] = {"id": self._next_id(), "uid": uid, "title": title, "version": 1}
        return 200, self.folders[uid]

    def get_datasource(self, payload, uid):
        found = self.datasources.get(uid)
        return (200, found) if found else (404, {"message": "Data source not found"})

    def post_datasource(self, payload):
        if not payload.get("name") or not payload.get("type"):
            return 400, {"message": "Required field name or type is missing"}
        if any(d["name"] == payload["name"] for d in self.datasources.values()):
            return 409, {"message": "data source with the same name already exists"}
        uid = payload.get("uid") or f"d{self._next_id()}"
        stored = {k: v for k, v in payload.items() if k != "secureJsonData"}
        stored.update(id=self._next_id(), uid=uid,
                      secureJsonFields={k: True for k in payload.get("secureJsonData") or {}})
        self.datasources[uid] = stored
        return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource added", "name": stored["name"]}

    def put_datasource(self, payload, uid):
        if uid not in self.datasources:
            return 404, {"message": "Data source not found"}
        stored = {k: v for k, v in payload.items() if k != "secureJsonData"}
        stored.update(id=self.datasources[uid]["id"], uid=uid,
                      secureJsonFields={k: True for k in payload.get("secureJsonData") or {}})
        self.datasources[uid] = stored
        return 200, {"datasource": stored, "id": stored["id"], "message": "Datasource updated", "name": stored["name"]}

    def get_dashboard(self, payload, uid):
        found = self.dashboards.get(uid)
        if found is None:
            return 404, {"message": "Dashboard not found"}
        return 200, {"dashboard": json.loads(json.dumps(found)), "meta": dict(self.meta[uid])}

    def post_dashboard(self, payload):
        dashboard = payload.get("dashboard") or {}
        if not dashboard.get("title"):
            return 400, {"message": "Dashboard title cannot be empty", "status": "empty-name"}
        uid = dashboard.get("uid") or f"u{self._next_id()}"
        folder = payload.get("folderUid") or ""
        if folder and folder not in self.folders:
            return 400, {"message": "folder not found", "status": "folder-not-found"}
        existing = self.dashboards.get(uid)
        overwrite = bool(payload.get("overwrite"))
        for other_uid, other in self.dashboards.items():
            if other_uid != uid and other["title"] == dashboard["title"] and self.meta[other_uid]["folderUid"] == folder \
                    and not overwrite:
                return 412, {"message": "A dashboard with the same name in the folder already exists",
                             "status": "name-exists"}
        if existing is not None and not overwrite and dashboard.get("version") != existing["version"]:
            return 412, {"message": "The dashboard has been changed by someone else", "status": "version-mismatch"}
        stored = json.loads(json.dumps(dashboard))
        stored["uid"] = uid
        stored["id"] = existing["id"] if existing else self._next_id()
        stored["version"] = existing["version"] + 1 if existing else 1
        self.dashboards[uid] = stored
        self.meta[uid] = {"folderUid": folder, "version": stored["version"], "message": payload.get("message", "")}
        return 200, {"id": stored["id"], "uid": uid, "url": f"/d/{uid}/x", "status": "success",
                     "version": stored["version"], "slug": "x"}

    ROUTES = (
        (r"GET /api/folders/([^/]+)", get_folder),
        (r"POST /api/folders", post_folder),
        (r"GET /api/datasources/uid/([^/]+)", get_datasource),
        (r"POST /api/datasources", post_datasource),
        (r"PUT /api/datasources/uid/([^/]+)", put_datasource),
        (r"GET /api/dashboards/uid/([^/]+)", get_dashboard),
        (r"POST /api/dashboards/db", post_dashboard),
    )
