"""The review web app (Starlette): one question at a time, answered by button or key, saved before the next page.

Serves only the run's photos (``/photo/new/<row>``, ``/photo/gallery/<row>``: indices, never paths); every
state-changing request is a POST carrying the page's per-session token.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from .graph import Decision
from .pages import render
from .queue import Task
from .session import Review, TaskClosed
from .store import TaskTaken

SESSION_COOKIE = "review_session"
SHOWN_PHOTOS = 8
"""Settled photos shown of the animal of a question."""
CANDIDATE_PHOTOS = 3
"""Photos shown of a candidate group (the matching photo first)."""
REFERENCE_PHOTOS = 4
"""Catalogue photos shown for a known individual."""


def create_app(review: Review, *, reviewer: str) -> Starlette:
    """The app serving ``review``; decisions are saved under ``reviewer``."""
    secret = secrets.token_bytes(32)
    gallery_rows: dict[str, list[int]] = {}
    for row, name in enumerate(review.run.gallery["identity"].astype(str)):
        gallery_rows.setdefault(name, []).append(row)

    def token_of(session: str) -> str:
        return hmac.new(secret, session.encode(), hashlib.sha256).hexdigest()

    def page(request: Request, template: str, *, status: int = 200, **values) -> HTMLResponse:
        session = request.cookies.get(SESSION_COOKIE) or secrets.token_urlsafe(24)
        response = HTMLResponse(render(template, progress=review.progress(), token=token_of(session), **values),
                                status_code=status)
        response.set_cookie(SESSION_COOKIE, session, httponly=True, samesite="strict")
        return response

    async def checked_form(request: Request):
        form = await request.form()
        session = request.cookies.get(SESSION_COOKIE, "")
        if not session or not hmac.compare_digest(str(form.get("token", "")), token_of(session)):
            return None
        return form

    def group_photos(node: str, *, first: str = "", limit: int = SHOWN_PHOTOS) -> list[tuple[str, str, bool]]:
        graph = review.graph
        rows = graph.members(graph.node(node))
        if first.startswith("photo:"):
            rows = sorted(rows, key=lambda r: r != int(first.split(":")[1]))
        ids = review.run.predictions["image_id"]
        photos = [(f"new/{r}", str(ids[r]), f"photo:{r}" == first) for r in rows[:limit]]
        known = graph.known_of().get(graph.find(graph.node(node)))
        return photos + (reference_photos(known[0]) if known else [])

    def reference_photos(name: str) -> list[tuple[str, str, bool]]:
        ids = review.run.gallery["image_id"]
        return [(f"gallery/{r}", f"catalogue: {ids[r]}", False) for r in gallery_rows.get(name, [])[:REFERENCE_PHOTOS]]

    def title(node: str, names) -> str:
        members = review.graph.members(review.graph.node(node))
        name = names[members[0]] if members else node.split(":", 1)[1]
        return f"{name} ({len(members)} new photo{'s' if len(members) != 1 else ''})"

    def task_page(request: Request, task: Task | None, *, message: str = "", status: int = 200) -> HTMLResponse:
        if task is None:
            return page(request, "task.html", task=None, message=message, status=status, title="done")
        graph = review.graph
        ids = review.run.predictions["image_id"]
        names = graph.names()
        group = graph.node(task.a)
        known = graph.known_of().get(graph.find(group))
        placed = [r for r in graph.members(group) if graph.placed[r]]
        reference = reference_photos(known[0]) if known else []
        reference += [(f"new/{r}", f"{ids[r]} (settled)", False) for r in placed[:SHOWN_PHOTOS]]
        members = [(f"new/{key.split(':')[1]}", str(ids[int(key.split(':')[1])]), key) for key in task.members]
        candidates = []
        for key, alone, probability, pair in zip(task.candidates, task.alone, task.probabilities, task.evidence,
                                                 strict=True):
            row = int(key.split(":")[1]) if alone else -1
            photos = [(f"new/{row}", str(ids[row]), True)] if alone else \
                group_photos(key, first=pair.split("|")[1], limit=CANDIDATE_PHOTOS)
            candidates.append({"node": key, "probability": probability, "photos": photos,
                               "title": f"photo {ids[row]}" if alone else title(key, names)})
        values = {"task": task, "revision": review.revision, "message": message, "title": "question",
                  "heading": f"Which of these photos show {known[0]}?" if known else
                  "Which of these photos show this animal?",
                  "animal": title(task.a, names), "reference": reference, "members": members,
                  "lone": len(members) == 1 and task.a in task.members, "candidates": candidates,
                  "known": bool(known), "name": names[graph.members(group)[0]] if graph.members(group) else ""}
        return page(request, "task.html", status=status, **values)

    async def next_question(request: Request) -> Response:
        tasks = review.tasks()
        return task_page(request, tasks[0] if tasks else None)

    async def answer(request: Request) -> Response:
        form = await checked_form(request)
        if form is None:
            return PlainTextResponse("missing or wrong token: reload the page and answer again", status_code=403)
        key = str(form.get("task", ""))
        task = review.task(key)
        if task is None:
            return task_page(request, (review.tasks() or [None])[0], status=409, message=_closed_message(review, key))
        try:
            decisions = _decisions(task, form)
            revision = int(str(form.get("revision", "")))
        except ValueError as error:
            return PlainTextResponse(str(error), status_code=400)
        try:
            review.answer(key, decisions, reviewer=reviewer, seen_revision=revision)
        except TaskTaken as taken:
            return task_page(request, (review.tasks() or [None])[0], status=409, message=str(taken))
        except TaskClosed as closed:
            return task_page(request, (review.tasks() or [None])[0], status=409, message=str(closed))
        return RedirectResponse("/", status_code=303)

    async def rename(request: Request) -> Response:
        form = await checked_form(request)
        if form is None:
            return PlainTextResponse("missing or wrong token: reload the page and answer again", status_code=403)
        node, name = str(form.get("node", "")), str(form.get("name", "")).strip()
        try:
            review.answer(f"name|{node}", [Decision("name", node, name=name)], reviewer=reviewer)
        except ValueError as error:
            return PlainTextResponse(str(error), status_code=400)
        return RedirectResponse("/catalogue", status_code=303)

    def catalogue_page(request: Request, *, written: str = "") -> HTMLResponse:
        graph = review.graph
        names, roots = graph.names(), graph.roots()
        rows = []
        for name in sorted(set(names)):
            members = np.flatnonzero(names == name)
            node = graph.key(int(roots[members[0]]))
            rows.append({"name": name, "photos": len(members), "settled": int(graph.settled[members].sum()),
                         "known": name in review.run.known, "node": node})
        return page(request, "catalogue.html", title="catalogue", individuals=rows, written=written,
                    inconsistencies=graph.inconsistencies())

    async def catalogue(request: Request) -> Response:
        return catalogue_page(request)

    async def export(request: Request) -> Response:
        form = await checked_form(request)
        if form is None:
            return PlainTextResponse("missing or wrong token: reload the page and answer again", status_code=403)
        return catalogue_page(request, written=str(review.write_catalogue(
            with_unsettled=form.get("with_unsettled") == "1")))

    async def decisions_csv(request: Request) -> Response:
        return PlainTextResponse(review.store.to_csv(), media_type="text/csv")

    async def photo(request: Request) -> Response:
        frame = review.run.new_photos if request.path_params["set"] == "new" else review.run.gallery
        row = request.path_params["row"]
        if not 0 <= row < len(frame):
            return PlainTextResponse("no such photo", status_code=404)
        return FileResponse(frame["path"].iloc[row])

    return Starlette(routes=[
        Route("/", next_question, methods=["GET"]),
        Route("/answer", answer, methods=["POST"]),
        Route("/name", rename, methods=["POST"]),
        Route("/catalogue", catalogue, methods=["GET"]),
        Route("/export", export, methods=["POST"]),
        Route("/decisions.csv", decisions_csv, methods=["GET"]),
        Route("/photo/{set:str}/{row:int}", photo, methods=["GET"]),
    ])


def _decisions(task: Task, form) -> list[Decision]:
    """The decisions of one submitted answer to ``task``."""
    action = str(form.get("action", ""))
    if action == "cant_tell":
        return task.cant_tell()
    if action != "save":
        raise ValueError(f"answer {action!r} is not one of save, cant_tell")
    return task.decisions(moved_out={str(key) for key in form.getlist("out")},
                          joined={str(key) for key in form.getlist("join")}, name=str(form.get("name", "")))


def _closed_message(review: Review, key: str) -> str:
    taken = [d for d in review.store.decisions() if d.task == key]
    if taken:
        return (f"this question was already answered by {taken[-1].reviewer} at {taken[-1].time}; "
                "your answer was not saved")
    return "that question is no longer open (the catalogue changed); your answer was not saved"
