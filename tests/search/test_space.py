from steerfront.search.space import Sampler, SearchSpace


def first(space: SearchSpace) -> list[tuple[str, str]]:
    points = Sampler(space, [1]).first_points()
    return [(p["form"], p[f"objective_{p['form']}"]) for p in points]


def test_the_first_trials_cover_every_form_then_every_objective():
    assert first(SearchSpace()) == [
        ("vector", "split"),
        ("lora", "sft"),
        ("local_weight", "reps"),
        ("vector", "diffmean"),
    ]


def test_diffmean_goes_to_the_vector_form_or_nowhere():
    assert first(SearchSpace(forms=["lora", "vector"], objectives=["diffmean", "sft"])) == [
        ("lora", "sft"),
        ("vector", "diffmean"),
    ]
    assert first(SearchSpace(forms=["lora"], objectives=["diffmean", "sft"])) == [("lora", "sft")]
