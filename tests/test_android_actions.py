"""Action schema, model-output parsers, coordinate scaling, validation and UI-dump parsing (no device)."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tools.android.actions import (
    ACTION_TYPES,
    ActionError,
    Click,
    InputText,
    OpenApp,
    SecretRef,
    action_json_schema,
    denormalize,
    parse_action,
    scale_point,
    validate_action,
)
from tools.android.observation import Observation, ObservationError, element_list, parse_ui_xml, set_of_mark
from tools.android.sim import Phone

SCREEN = (1080, 2400)


@pytest.mark.parametrize("obj", [
    {"action_type": "click", "x": 10, "y": 20},
    {"action_type": "double_tap", "index": 3},
    {"action_type": "long_press", "x": 1, "y": 2},
    {"action_type": "input_text", "text": "hi", "index": 0},
    {"action_type": "keyboard_enter"},
    {"action_type": "navigate_home"},
    {"action_type": "navigate_back"},
    {"action_type": "scroll", "direction": "down"},
    {"action_type": "swipe", "direction": "left", "index": 2},
    {"action_type": "open_app", "app_name": "Clock"},
    {"action_type": "wait", "seconds": 0.5},
    {"action_type": "status", "goal_status": "infeasible"},
    {"action_type": "answer", "text": "555-0101"},
])
def test_every_androidworld_action_round_trips(obj):
    action = parse_action(obj, SCREEN)
    assert action.to_json() == {**obj, **({"clear_text": False} if obj["action_type"] == "input_text" else {})}
    assert parse_action(action.to_json(), SCREEN) == action
    assert {a for a in ACTION_TYPES} == set(action_json_schema()["discriminator"]["mapping"])


def test_json_in_markdown_fence_and_alias_key():
    action = parse_action('Sure.\n```json\n{"action": "open_app", "app_name": "Settings"}\n```')
    assert action == OpenApp(app_name="Settings")


def test_ming_click_is_zero_to_one_of_the_screen():
    action = parse_action("click(x=0.384,y=0.082)", SCREEN)
    assert isinstance(action, Click)
    assert (action.x, action.y) == (round(0.384 * 1080), round(0.082 * 2400))


@pytest.mark.parametrize("text,expected", [
    ("click(start_box='(384,82)')", (415, 197)),  # UI-TARS, 0..1000
    ("click(point='<point>384 82</point>')", (415, 197)),
    ('do(action="Tap", element=[384,82])', (415, 197)),  # AutoGLM, 0..1000
    ("click(start_box='(100,100,200,300)')", (162, 480)),  # a box: its centre
])
def test_normalised_1000_parsers(text, expected):
    action = parse_action(text, SCREEN)
    assert (action.x, action.y) == expected


def test_autoglm_type_launch_swipe_and_finish():
    assert parse_action('do(action="Type", text="你好")', SCREEN) == InputText(text="你好")
    assert parse_action('do(action="Launch", app="Clock")', SCREEN) == OpenApp(app_name="Clock")
    swipe = parse_action('do(action="Swipe", start=[500,800], end=[500,200])', SCREEN)
    assert swipe.action_type == "swipe" and swipe.direction == "up"
    assert parse_action('finished(content="done")', SCREEN).goal_status == "complete"


def test_scaling_from_screenshot_space_to_device_space():
    # the model saw a 540x1200 resize of a 1080x2400 screen
    action = parse_action({"action_type": "click", "x": 270, "y": 600}, SCREEN, image_size=(540, 1200))
    assert (action.x, action.y) == (540, 1200)
    assert scale_point(540, 1200, SCREEN, (540, 1200)) == (270, 600)
    assert denormalize(1.0, 1.0, "norm1", SCREEN) == (1079, 2399)  # clamped onto the last pixel
    assert denormalize(1000, 0, "norm1000", SCREEN) == (1079, 0)


def test_unknown_and_malformed_actions_give_clear_errors():
    with pytest.raises(ActionError, match=r"unknown action type 'fly'.*known: click"):
        parse_action({"action_type": "fly"})
    with pytest.raises(ActionError, match="unknown action 'teleport'"):
        parse_action("teleport(x=1, y=2)")
    with pytest.raises(ActionError, match="not valid JSON"):
        parse_action('{"action_type": "click", "x": }')
    with pytest.raises(ActionError, match="invalid scroll action: direction"):
        parse_action({"action_type": "scroll", "direction": "sideways"})
    with pytest.raises(ActionError, match="invalid status action: goal_status"):
        parse_action({"action_type": "status", "goal_status": "maybe"})
    with pytest.raises(ActionError, match="invalid click action: force: Extra inputs are not permitted"):
        parse_action({"action_type": "click", "x": 1, "y": 2, "force": True})
    # a model's reasoning next to the action is not an error
    assert parse_action({"action_type": "navigate_back", "reasoning": "go up"}).action_type == "navigate_back"


def test_validation_bounds_index_and_app():
    with pytest.raises(ActionError, match=r"click at \(1200, 50\) is outside the 1080x2400 screen"):
        validate_action(Click(x=1200, y=50), SCREEN)
    with pytest.raises(ActionError, match=r"element index 9 does not exist \(valid indices: 0..3\)"):
        validate_action(Click(index=9), SCREEN, n_elements=4)
    with pytest.raises(ActionError, match="needs an element index or x and y"):
        validate_action(Click(), SCREEN)
    with pytest.raises(ActionError, match=r"unknown app 'Fooify' \(known: Clock, Settings\)"):
        validate_action(OpenApp(app_name="Fooify"), SCREEN, apps={"Settings": "a", "Clock": "b"})
    validate_action(OpenApp(app_name="settings"), SCREEN, apps={"Settings": "a"})


def test_secret_reference_is_kept_as_reference():
    action = parse_action({"action_type": "input_text", "text": {"secret": "pin"}})
    assert action.text == SecretRef(secret="pin")
    assert action.to_json()["text"] == {"secret": "pin"}


def test_ui_dump_to_elements_and_prompt():
    phone = Phone((720, 1280))
    phone.launch("com.android.settings")
    elements = parse_ui_xml(phone.dump_xml(), (720, 1280))
    wifi = next(e for e in elements if e.text == "Wi-Fi")
    assert wifi.checkable and not wifi.checked and wifi.clickable
    assert wifi.resource_id == "com.android.settings:id/wifi"
    assert wifi.bounds[0] < wifi.center[0] < wifi.bounds[2]
    assert f'[{wifi.index}] Switch "Wi-Fi" (clickable, checked=false)' in element_list(elements)


def test_malformed_xml_gives_clear_errors():
    with pytest.raises(ObservationError, match="malformed XML"):
        parse_ui_xml("<?xml version='1.0'?><hierarchy><node bounds='[0,0][1,1]'></hierarchy>")
    with pytest.raises(ObservationError, match="no <hierarchy>"):
        parse_ui_xml("ERROR: could not get idle state.")
    with pytest.raises(ObservationError, match="unreadable bounds"):
        parse_ui_xml('<hierarchy><node text="x" bounds="[0,0][a,b]"/></hierarchy>')


def test_set_of_mark_draws_numbered_boxes_in_image_space():
    phone = Phone((720, 1280))
    obs = Observation.from_raw(phone.screenshot(), phone.dump_xml(), (720, 1280))
    small = obs.image().resize((360, 640))
    marked = set_of_mark(small, obs.elements, obs.screen)
    assert marked.size == (360, 640)
    x1, y1, x2, y2 = obs.elements[0].bounds
    # the box outline is drawn at half scale: the top-left corner pixel changed colour
    assert marked.getpixel((x1 // 2 + 1, y1 // 2 + 20)) != small.getpixel((x1 // 2 + 1, y1 // 2 + 20))
    png = Image.open(io.BytesIO(obs.screenshot_png))
    assert png.size == (720, 1280)
