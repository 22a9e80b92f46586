"""Visual retrieval reports drawn from :class:`~reid_lightning.retrieval.RetrievalResults`: the retrieval
gallery, score histograms, PR and CMC curves, reliability diagrams, keypoint-match pictures of reranking and
per-query tables, contact sheets of proposed new individuals, logged to W&B or written as PNG + ``report.html``."""

from .contact_sheet import contact_sheet
from .distributions import ScoreDistributions, cmc_curve, score_distributions
from .files import write_report_files
from .gallery import GalleryLayout, gallery_image, pick_queries
from .matches import match_figure, match_segments, side_by_side
from .names import image_files, image_names
from .panels import (
    PANELS,
    Caption,
    Curve,
    RegisteredPanel,
    Report,
    ReportInputs,
    ReportSettings,
    build_report,
    register_panel,
)
from .tables import embedding_sample, query_frame
from .wandb_log import log_report_to_wandb

__all__ = [
    "PANELS",
    "Caption",
    "Curve",
    "GalleryLayout",
    "RegisteredPanel",
    "Report",
    "ReportInputs",
    "ReportSettings",
    "ScoreDistributions",
    "build_report",
    "cmc_curve",
    "contact_sheet",
    "embedding_sample",
    "gallery_image",
    "image_files",
    "image_names",
    "log_report_to_wandb",
    "match_figure",
    "match_segments",
    "pick_queries",
    "query_frame",
    "register_panel",
    "score_distributions",
    "side_by_side",
    "write_report_files",
]
