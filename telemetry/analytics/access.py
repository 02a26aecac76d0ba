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
