"""Which runtime images the real node removes before importing new builds."""

from tunegate_cluster.real_node import stale_images

OLD_TRAINER = ("localhost/tunegate/trainer:old", "sha256:m-old")
OLD_TRAINER_ALIAS = ("sha256:id-old", "sha256:m-old")
NEW_TRAINER = ("localhost/tunegate/trainer:new", "sha256:m-new")
NEW_TRAINER_ALIAS = ("sha256:id-new", "sha256:m-new")
FOREIGN = ("registry.example/other:1", "sha256:m-foreign")


def test_an_earlier_build_goes_with_the_id_alias_that_keeps_its_layers():
    listed = [OLD_TRAINER, OLD_TRAINER_ALIAS, NEW_TRAINER, NEW_TRAINER_ALIAS]
    stale = stale_images(listed, keep=(NEW_TRAINER[0],))
    assert sorted(stale) == sorted([OLD_TRAINER[0], OLD_TRAINER_ALIAS[0]])


def test_an_alias_of_a_kept_image_stays():
    listed = [NEW_TRAINER, NEW_TRAINER_ALIAS]
    assert stale_images(listed, keep=(NEW_TRAINER[0],)) == []


def test_an_alias_left_after_its_tag_was_removed_goes():
    # What earlier harness versions left behind: the tag removed, the alias kept.
    listed = [OLD_TRAINER_ALIAS, NEW_TRAINER]
    assert stale_images(listed, keep=(NEW_TRAINER[0],)) == [OLD_TRAINER_ALIAS[0]]


def test_images_not_ours_are_left_alone():
    listed = [FOREIGN, NEW_TRAINER]
    assert stale_images(listed, keep=(NEW_TRAINER[0],)) == []
