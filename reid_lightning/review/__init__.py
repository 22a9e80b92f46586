"""Review the answers of ``predict`` with a person in the loop; the reviewed photos grow the catalogue.

``python -m reid_lightning.review RUN_DIR`` serves the questions of a :class:`Review` in a local web page. Its
pieces: :class:`ReviewRun` (the predict run's files), :class:`ReviewGraph` (the catalogue as proposal plus
decisions), :func:`open_tasks` (the queue), :class:`DecisionStore` (SQLite) and :class:`SimulatedReviewer` (answers
from the truth, for ``benchmarks/bench_review.py``).
"""

from .graph import Decision, ReviewGraph
from .inputs import ReviewRun
from .queue import Evidence, Task, auto_decisions, open_tasks
from .session import Review, TaskClosed
from .simulate import SimulatedReviewer
from .store import DecisionStore, TaskTaken

__all__ = ["Decision", "DecisionStore", "Evidence", "Review", "ReviewGraph", "ReviewRun", "SimulatedReviewer",
           "Task", "TaskClosed", "TaskTaken", "auto_decisions", "open_tasks"]
