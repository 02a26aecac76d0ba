"""Who may read which project's analytics: staff superusers see every project, everyone else
only the projects they are a member of. A project you may not see does not exist, for you."""

from telemetry.models import Project


def visible_projects(*, user):
    """Projects `user` may read, ordered by slug (none for anonymous users)."""
    if not user.is_authenticated or not user.is_active:
        return Project.objects.none()
    if user.is_staff and user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(members=user)


def project_for(*, user, slug: str) -> Project | None:
    """The project `slug` if `user` may read it, else None (callers answer 404 either way)."""
    return visible_projects(user=user).filter(slug=slug).first()


def public_project(*, slug: str) -> Project | None:
    """The project behind /public/<slug>/, only if its maintainer turned the page on."""
    return Project.objects.filter(slug=slug, public_page=True).first()


def may_rotate_keys(*, user, project: Project) -> bool:
    """Whether `user` may issue and revoke `project`'s ingest keys from the dashboard: staff
    superusers always, members when the project allows it. (The operator token is staff-only,
    in the admin.)"""
    if not user.is_authenticated or not user.is_active:
        return False
    if user.is_staff and user.is_superuser:
        return True
    return project.members_can_rotate_keys and project.members.filter(pk=user.pk).exists()
