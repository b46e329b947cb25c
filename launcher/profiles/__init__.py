"""Profiles: YAML files that describe a deployment, validated, merged (`extends`) and turned into plans."""
from qwen35.launcher.profiles.loader import (ProfileError, ProfileIssue, check_profile_file, is_base,
                                             load_profile, merge)
from qwen35.launcher.profiles.planning import (apply_extras, pinned_request, plan_document, plan_extras,
                                               plan_profile, plan_request, request_to_profile, to_plan_request)
from qwen35.launcher.profiles.schema import CPU_TARGET, PROFILE_VERSION, Engine, Hardware, Profile, Serving
from qwen35.launcher.profiles.shipped import find_profile, shipped_dir, shipped_names, shipped_path

__all__ = [
    "CPU_TARGET",
    "PROFILE_VERSION",
    "Engine",
    "Hardware",
    "Profile",
    "ProfileError",
    "ProfileIssue",
    "Serving",
    "apply_extras",
    "find_profile",
    "check_profile_file",
    "is_base",
    "load_profile",
    "merge",
    "pinned_request",
    "plan_document",
    "plan_extras",
    "plan_profile",
    "plan_request",
    "request_to_profile",
    "shipped_dir",
    "shipped_names",
    "shipped_path",
    "to_plan_request",
]
