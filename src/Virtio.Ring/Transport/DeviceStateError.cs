namespace Virtio.Ring.Transport;

/// <summary>Why <c>TryRestoreState</c> refused a snapshot. The device is left reset.</summary>
public enum DeviceStateError
{
    /// <summary>Restored.</summary>
    None = 0,

    /// <summary>The snapshot ends early, has bytes left over, or a field has an impossible encoding.</summary>
    Malformed,

    /// <summary>Not a snapshot of this kind (wrong magic number).</summary>
    WrongMagic,

    /// <summary>A format version this library does not read.</summary>
    UnsupportedVersion,

    /// <summary>
    /// Saved from a different device: another device ID, offered features, configuration size, queue count or
    /// maximum queue size.
    /// </summary>
    DeviceMismatch,

    /// <summary>A status the state machine cannot reach (DRIVER_OK without FEATURES_OK, say).</summary>
    InvalidStatus,

    /// <summary>Negotiated features the device did not offer, or negotiated features without FEATURES_OK.</summary>
    InvalidFeatures,

    /// <summary>A queue's configuration is impossible (size above the maximum, ready without FEATURES_OK, ...).</summary>
    InvalidQueueConfiguration,

    /// <summary>A queue's ring state does not agree with its ring in guest memory (see <see cref="QueueError.InvalidSavedState"/>).</summary>
    InvalidRingState,

    /// <summary>The device model refused its own state (or threw while reading it).</summary>
    ModelStateRejected,

    /// <summary>The transport's own registers are impossible.</summary>
    InvalidTransportState,
}
