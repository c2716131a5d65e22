"""A second kind of Zoho job for the tests: proof that a kind is a row, not a code path."""

from __future__ import annotations

from watcher.zoho_api import JobKind

# Another kind of Zoho job, written as Zoho documents its mass lead conversion's status answer:
# only a row, which the classification and the job logic read as they read MASS_UPDATE.
MASS_CONVERT = JobKind(
    path="/crm/{version}/Leads/actions/mass_convert",
    id_param="job_id",
    status_field="Status",
    statuses=frozenset({"SCHEDULED", "IN PROGRESS", "COMPLETED", "FAILED"}),
    terminal={"COMPLETED": "completed", "FAILED": "failed"},
    counts={
        "converted_count": "Converted_Count",
        "not_converted_count": "Not_Converted_Count",
        "lost_count": "Failed_Count",
        "all_count": "Total_Count",
    },
    processed=("converted_count", "lost_count"),
    total="all_count",
    failed="lost_count",
)
