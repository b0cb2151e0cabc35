"""Uploading a staged folder to the Hugging Face Hub with ``huggingface_hub.HfApi`` (the only network step).

The token comes from ``HF_TOKEN`` or the user's saved login (``hf auth login``); tests inject a fake ``HfApi``.
"""

from __future__ import annotations

from pathlib import Path

from detdemo.errors import DetDemoError


def hub_api(api=None):
    """``api`` if given (tests), else a real ``HfApi`` with the user's token; a clear error when there is none."""
    if api is not None:
        return api
    from huggingface_hub import HfApi, get_token

    token = get_token()
    if not token:
        raise DetDemoError("no Hugging Face token: set HF_TOKEN or run `hf auth login` (a token with write access), "
                           "or leave out --push/--space to stage the folders only")
    return HfApi(token=token)


def push_folder(folder: str | Path, repo_id: str, *, repo_type: str = "model", private: bool = False, api=None,
                message: str = "Upload from detdemo publish") -> str:
    """Create ``repo_id`` if needed and upload ``folder`` as one commit; returns the commit id (to pin)."""
    from huggingface_hub.errors import HfHubHTTPError

    api = hub_api(api)
    try:
        api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True,
                        space_sdk="gradio" if repo_type == "space" else None)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), repo_type=repo_type,
                                 commit_message=message)
    except HfHubHTTPError as exc:
        raise DetDemoError(f"uploading to {repo_type} {repo_id} failed: {str(exc).splitlines()[0][:300]}") from None
    except OSError as exc:
        raise DetDemoError(f"uploading to {repo_type} {repo_id} failed: cannot reach the Hub ({exc})") from None
    return info.oid
