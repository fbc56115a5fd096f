// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {Clones} from "@openzeppelin/contracts/proxy/Clones.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {EventTickets} from "./EventTickets.sol";

/// @title Deploys one `EventTickets` clone (EIP-1167) per event.
/// @notice The clone's address is derived from the event key, so it is known before the
/// transaction lands and a retried creation for the same event reverts instead of making a
/// second collection.
contract TicketFactory is Ownable {
    /// The shared implementation every collection delegates to.
    address public immutable implementation;

    mapping(bytes32 => address) public collectionOf;
    uint256 public collectionCount;

    event CollectionCreated(bytes32 indexed eventKey, address indexed collection, string name);

    error CollectionExists(bytes32 eventKey, address collection);

    constructor(address owner_) Ownable(owner_) {
        implementation = address(new EventTickets());
    }

    /// @notice Clones and initialises the collection of one event, in one transaction.
    function createCollection(bytes32 eventKey, EventTickets.InitParams calldata params)
        external
        onlyOwner
        returns (address collection)
    {
        address existing = collectionOf[eventKey];
        if (existing != address(0)) revert CollectionExists(eventKey, existing);
        collection = Clones.cloneDeterministic(implementation, eventKey);
        EventTickets(collection).initialize(params);
        collectionOf[eventKey] = collection;
        unchecked {
            collectionCount += 1;
        }
        emit CollectionCreated(eventKey, collection, params.name);
    }

    /// @notice The address `createCollection(eventKey, …)` deploys to.
    function predictCollection(bytes32 eventKey) external view returns (address) {
        return Clones.predictDeterministicAddress(implementation, eventKey);
    }
}
